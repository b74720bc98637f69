"""Medical pipelines' method code (book ch. 12–13; seed 003): Grad-CAM and the denoising ablation.

Data sources, splits and transforms shared with other methods live in `dlbook.data`; metrics in
`dlbook.metrics`.
"""
