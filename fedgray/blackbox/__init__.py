"""Black-box adaptation: CraFT (arXiv 2402.04050) through forward queries only.

The searched prompt ``p = p0 + A z`` is a text-input module like the gray-box ones:
:class:`fedgray.adapters.prompt.PromptSpace`.

- :mod:`~fedgray.blackbox.search`: CMA-ES over ``z`` (the ``cma`` package);
- :mod:`~fedgray.blackbox.refine`: the residual prediction-refinement MLP and the
  prediction-consistency term;
- :mod:`~fedgray.blackbox.craft`: collaborative (alternating) training within a query budget.
"""
