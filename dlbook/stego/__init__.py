"""GAN steganography (book ch. 6-8): metrics, baselines, the authors' generators, steganalysis, and the hide/reveal tool."""
