"""Medical and biological pipelines of book chapters 9-13 (protein secondary structure, ...)."""
