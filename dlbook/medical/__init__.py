"""Medical and biological pipelines of book chapters 9-13 and the leukaemia thesis: protein secondary
structure (`pssp`), Grad-CAM and the denoising ablation.

Data sources, splits and transforms shared with other methods live in `dlbook.data`; metrics in
`dlbook.metrics`.
"""
