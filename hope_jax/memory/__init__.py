"""The inner-loop engine: fast-weight memories, inner objectives and optimizers, chunked scans."""
