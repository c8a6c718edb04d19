"""Gradient check of any network the engine builds, layer by layer, and the ways checks go wrong.

- ``numeric``: central finite differences of the training objective against backprop (autograd or the
  by-hand backward), per layer, batched under ``vmap``: :func:`~core.lab.gradcheck.numeric.check_gradients`.
- ``result``: a check's per-layer rows and verdicts (:class:`~core.lab.gradcheck.result.GradCheck`), as an event.
- ``kinks``: ReLU kinks, where a finite difference and backprop disagree by construction.
- ``mistakes``: the seeds' 0.99999, done right and with each suspected cause.
- ``options``: the switches of one check as a page or a link holds them (:class:`CheckOptions`).
- ``stored``: a stored run at its initialization or at the trained weights the run store keeps.
- ``task``: a check as a job (:class:`GradCheckConfig`, kind "gradcheck") and its runner.
"""
