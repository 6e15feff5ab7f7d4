"""Deep Momentum Gradient Descent, DMGD (SPEC §2, Eq. 50; [NeurIPS] Eq. 23).

Eq. 50: W_{i+1} = W_i + m_{i+1}(u_i),  m_{i+1} = alpha m_i - eta grad L2(m_i; u_i),
u_i = grad L(W_i), with the momentum m(.) a deep memory trained by its own gradient step on an
internal objective L2.

Our scalable memory (one small MLP shared by every parameter, applied elementwise):

    m(x_e) = phi_e + f_theta(x_e),  f_theta(x) = tanh(x W1) W2,  x_e = (g_e/rms(g), mu_e/rms(mu))

* phi (one number per parameter element, like SGD-momentum's buffer) is the linear, value-less part
  of the memory: the bias of the memory's read-out. mu is its previous value (so the MLP sees the
  gradient and the momentum, both normalized per leaf to unit RMS).
* theta = (W1 [2, H], W2 [H]) is shared by all parameters routed to DMGD: H (`hidden`) neurons,
  ~3H numbers in total, whatever the model size. No biases: f is odd (f(-x) = -f(x)), so flipping
  the gradient flips the update.

Both parts take ONE gradient step, with retention, on the dot-product objective of Eqs. 33-34, 50:

    L2(m; u) = sum_e <m(x_e), u_e>
    phi   <- alpha phi - eta (1 - tau) u                  (d L2 / d phi_e = u_e: exactly momentum)
    theta <- alpha_mem theta - eta_mem grad_theta mean_e f_theta(x_e) u_e / rms(u)
    update = phi_new + eta * rms(u) * f_theta_new(x)      (read-out m_{i+1}(u_i) of Eq. 50)

The theta objective uses the per-leaf normalized gradient and a mean over elements so that its step
size eta_mem (`mem_lr`) is scale-free; alpha_mem (`mem_decay`) < 1 bounds theta (the dot-product
objective alone is unbounded, exactly as momentum with alpha = 1). The MLP term is measured in units
of one SGD step (eta * rms(u)); theta learns a nonlinear gain on gradient and momentum (e.g.
sign-like or clipped steps) that is shared across layers.

Initialization: W1 ~ N(0, 1/2) (fixed PRNG seed, static), W2 = 0, phi = 0. So a fresh DMGD is
exactly momentum SGD, and with `hidden = 0` or `mem_lr = 0` it stays momentum SGD at every step
(the "linear memory" special case). theta is trained online by the rule itself (it is optimizer
state, checkpointed with it), not by the outer loss.

Cost per step: O(H) elementwise flops per parameter (three passes: inner forward, its backward,
read-out) and reductions over all elements; the [size, H] hidden activations are elementwise
producers of reductions, which XLA fuses on accelerators.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim.rule import Rule, as_transformation

__all__ = ["DMGDState", "dmgd", "dmgd_rule", "mlp_memory"]

_EPS = 1e-12


class DMGDState(NamedTuple):
    """phi: linear per-element memory (momentum buffer); theta: shared MLP memory (w1, w2)."""

    phi: object
    theta: dict


def _rms(x):
    return jnp.sqrt(jnp.mean(jnp.square(x)) + _EPS)


def mlp_memory(theta, g_hat, mu_hat):
    """f_theta(x) = tanh(g_hat W1_0 + mu_hat W1_1) W2, elementwise over any shape."""
    w1, w2 = theta["w1"], theta["w2"]
    shape = (1,) * g_hat.ndim + (w2.shape[0],)
    z = g_hat[..., None] * w1[0].reshape(shape) + mu_hat[..., None] * w1[1].reshape(shape)
    return jnp.tanh(z) @ w2


def _features(g, mu):
    return g / _rms(g), mu / _rms(mu)


def dmgd_rule(hidden: int = 16, seed: int = 0) -> Rule:
    """DMGD as a pure rule (module docstring).

    Args:
      hidden: H, neurons of the shared memory MLP (0 = linear memory = momentum).
      seed: PRNG seed of W1's initialization.

    Hyperparameters: `lr` (eta), `momentum` (alpha), `dampening` (tau), `mem_lr` (eta_mem),
    `mem_decay` (alpha_mem).
    """

    def init(params):
        phi = jax.tree.map(jnp.zeros_like, params)
        leaves = jax.tree.leaves(params)
        dtype = leaves[0].dtype if leaves else jnp.float32
        w1 = jax.random.normal(jax.random.key(seed), (2, hidden), dtype) * (0.5**0.5)
        return DMGDState(phi, {"w1": w1, "w2": jnp.zeros((hidden,), dtype)})

    def update(grads, state, hp, params=None):
        del params
        lr, alpha, tau = hp["lr"], hp["momentum"], hp["dampening"]
        phi = jax.tree.map(lambda p, g: alpha * p - lr * (1.0 - tau) * g, state.phi, grads)
        if hidden == 0:
            return phi, DMGDState(phi, state.theta)
        leaves_g = jax.tree.leaves(grads)
        leaves_mu = jax.tree.leaves(state.phi)
        feats = [_features(g, mu) for g, mu in zip(leaves_g, leaves_mu)]
        total = sum(g.size for g in leaves_g)

        def inner_loss(theta):  # L2(theta; u) = mean_e f_theta(x_e) u_e / rms(u)
            return sum(jnp.sum(mlp_memory(theta, gh, mh) * gh) for gh, mh in feats) / total

        grad_theta = jax.grad(inner_loss)(state.theta)
        theta = jax.tree.map(lambda t, d: hp["mem_decay"] * t - hp["mem_lr"] * d,
                             state.theta, grad_theta)
        deep = [lr * _rms(g) * mlp_memory(theta, gh, mh) for g, (gh, mh) in zip(leaves_g, feats)]
        deep_tree = jax.tree.unflatten(jax.tree.structure(grads), deep)
        updates = jax.tree.map(jnp.add, phi, deep_tree)
        return updates, DMGDState(phi, theta)

    defaults = {"momentum": 0.9, "dampening": 0.0, "mem_lr": 0.01, "mem_decay": 0.9}
    return Rule(f"dmgd[H={hidden}]", init, update, defaults)


def dmgd(learning_rate, momentum=0.9, dampening=0.0, mem_lr=0.01, mem_decay=0.9,
         hidden: int = 16, seed: int = 0) -> optax.GradientTransformation:
    """optax factory for `dmgd_rule` (static: hidden, seed)."""
    return as_transformation(dmgd_rule(hidden, seed), lr=learning_rate, momentum=momentum,
                             dampening=dampening, mem_lr=mem_lr, mem_decay=mem_decay)
