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

Initialization: W1 ~ N(0, 1/2) (fixed PRNG seed, static, always drawn in float32 and stored in the
state dtype: float32, float64 under x64, whatever the params' dtype), W2 = 0, phi = 0. So a fresh
DMGD is exactly momentum SGD, and with `hidden = 0` or `mem_lr = 0` it stays momentum SGD at every
step (the "linear memory" special case). theta is trained online by the rule itself (it is
optimizer state, checkpointed with it), not by the outer loss.

Cost per step: O(H) elementwise flops per parameter (three passes: inner forward, its backward,
read-out) and reductions over all elements; the [size, H] hidden activations are elementwise
producers of reductions, which XLA fuses on accelerators.

`form="paper"`: Eq. 50 as printed, with the internal objective the dot product with the all-ones
value (SPEC §2 table; NeurIPS Eq. 23 writes the value I):

    L2(theta; u) = <m_theta(u), 1> = sum_e m_theta(u_e),  m_theta(x) = tanh(x w1) w2  (elementwise)
    theta_{i+1} = alpha theta_i - eta (1 - tau) grad_theta L2(theta_i; u_i)     (Eq. 50, 2nd line)
    update      = m_{theta_{i+1}}(u_i)                                          (Eq. 50, 1st line)

The memory sees only the raw gradient u (no normalization, no momentum input), its weights take
the outer lr eta and momentum alpha (mem_lr / mem_decay are not used), and each parameter leaf has
its own theta = (w1 [H], w2 [H]) (the paper does not fix the MLP's shape; an MLP over the whole
flattened gradient would have O(size^2) weights). Init w1 ~ N(0, 1), w2 = 0. Note the objective
does not involve a descent direction: for small u the update is -c (sum_e u_e) u with c > 0, a
gradient step only while the gradient's entries sum to a positive number
(docs/RESULTS.md measures it).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from hope_jax.optim.rule import Rule, as_transformation

__all__ = ["DMGDState", "dmgd", "dmgd_rule", "mlp_memory", "paper_memory", "paper_objective",
           "shared_objective", "state_dtype"]

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


def shared_objective(theta, grads, mus):
    """L2(theta; u) = mean_e f_theta(x_e) u_e / rms(u) over every element of every leaf, with
    x_e = (g_e / rms(g), mu_e / rms(mu)) per leaf (the theta objective of the module docstring)."""
    leaves_g = jax.tree.leaves(grads)
    total = sum(g.size for g in leaves_g)
    feats = [_features(g, mu) for g, mu in zip(leaves_g, jax.tree.leaves(mus))]
    return sum(jnp.sum(mlp_memory(theta, gh, mh) * gh) for gh, mh in feats) / total


def paper_memory(theta, u):
    """m_theta(u) = tanh(u w1) w2 elementwise (form="paper", module docstring)."""
    w1 = theta["w1"].reshape((1,) * u.ndim + theta["w1"].shape)
    return jnp.tanh(u[..., None] * w1) @ theta["w2"]


def paper_objective(theta, u):
    """L2(theta; u) = <m_theta(u), 1> (Eq. 50, dot product with the all-ones value)."""
    return jnp.sum(paper_memory(theta, u))


def _features(g, mu):
    return g / _rms(g), mu / _rms(mu)


def state_dtype():
    """The dtype of DMGD's MLP state: float32 (float64 under x64), whatever the params' dtype."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _normal(key, shape, scale: float):
    """N(0, scale^2) drawn in float32 (the same numbers under x64) and cast to the state dtype."""
    return (jax.random.normal(key, shape, jnp.float32) * scale).astype(state_dtype())


DMGD_FORMS = ("reinterpreted", "paper")


def _paper_rule(hidden: int, seed: int) -> Rule:
    """Eq. 50 as printed (module docstring, form="paper")."""

    def init(params):
        leaves, tree = jax.tree.flatten(params)
        keys = [jax.random.fold_in(jax.random.key(seed), i) for i in range(len(leaves))]
        theta = [{"w1": _normal(k, (hidden,), 1.0),
                  "w2": jnp.zeros((hidden,), state_dtype())} for k in keys]
        return DMGDState((), jax.tree.unflatten(tree, theta))

    def update(grads, state, hp, params=None):
        del params
        write = hp["lr"] * (1.0 - hp["dampening"])
        leaves_g, tree = jax.tree.flatten(grads)
        thetas = tree.flatten_up_to(state.theta)
        new = []
        for g, th in zip(leaves_g, thetas):
            d = jax.grad(paper_objective)(th, g.astype(state_dtype()))
            new.append(jax.tree.map(lambda t, dt: hp["momentum"] * t - write * dt, th, d))
        updates = [paper_memory(th, g.astype(state_dtype())) for g, th in zip(leaves_g, new)]
        return (jax.tree.unflatten(tree, updates),
                DMGDState((), jax.tree.unflatten(tree, new)))

    return Rule(f"dmgd[H={hidden},paper]", init, update, {"momentum": 0.9, "dampening": 0.0})


def dmgd_rule(hidden: int = 16, seed: int = 0, form: str = "reinterpreted") -> Rule:
    """DMGD as a pure rule (module docstring).

    Args:
      hidden: H, neurons of the memory MLP (0 = linear memory = momentum; "reinterpreted" only).
      seed: PRNG seed of W1's initialization.
      form: "reinterpreted" (default: shared MLP on normalized gradient and momentum, objective
        <f(x), u>) or "paper" (Eq. 50 as printed: objective <m(u), 1>, per-leaf MLP on u).

    Hyperparameters: `lr` (eta), `momentum` (alpha), `dampening` (tau), `mem_lr` (eta_mem),
    `mem_decay` (alpha_mem); "paper" uses only the first three.
    """
    if form not in DMGD_FORMS:
        raise ValueError(f"dmgd form={form!r}: expected one of {DMGD_FORMS}")
    if form == "paper":
        if hidden < 1:
            raise ValueError(f"dmgd form='paper' needs hidden >= 1 (got {hidden}): its update is "
                             "the MLP's output")
        return _paper_rule(hidden, seed)

    def init(params):
        phi = jax.tree.map(jnp.zeros_like, params)
        w1 = _normal(jax.random.key(seed), (2, hidden), 0.5**0.5)
        return DMGDState(phi, {"w1": w1, "w2": jnp.zeros((hidden,), state_dtype())})

    def update(grads, state, hp, params=None):
        del params
        lr, alpha, tau = hp["lr"], hp["momentum"], hp["dampening"]
        phi = jax.tree.map(lambda p, g: alpha * p - lr * (1.0 - tau) * g, state.phi, grads)
        if hidden == 0:
            return phi, DMGDState(phi, state.theta)
        leaves_g = jax.tree.leaves(grads)
        feats = [_features(g, mu) for g, mu in zip(leaves_g, jax.tree.leaves(state.phi))]
        grad_theta = jax.grad(shared_objective)(state.theta, grads, state.phi)
        theta = jax.tree.map(lambda t, d: hp["mem_decay"] * t - hp["mem_lr"] * d,
                             state.theta, grad_theta)
        deep = [lr * _rms(g) * mlp_memory(theta, gh, mh) for g, (gh, mh) in zip(leaves_g, feats)]
        deep_tree = jax.tree.unflatten(jax.tree.structure(grads), deep)
        updates = jax.tree.map(jnp.add, phi, deep_tree)
        return updates, DMGDState(phi, theta)

    defaults = {"momentum": 0.9, "dampening": 0.0, "mem_lr": 0.01, "mem_decay": 0.9}
    return Rule(f"dmgd[H={hidden}]", init, update, defaults)


def dmgd(learning_rate, momentum=0.9, dampening=0.0, mem_lr=0.01, mem_decay=0.9,
         hidden: int = 16, seed: int = 0, form: str = "reinterpreted"
         ) -> optax.GradientTransformation:
    """optax factory for `dmgd_rule` (static: hidden, seed, form)."""
    return as_transformation(dmgd_rule(hidden, seed, form), lr=learning_rate, momentum=momentum,
                             dampening=dampening, mem_lr=mem_lr, mem_decay=mem_decay)
