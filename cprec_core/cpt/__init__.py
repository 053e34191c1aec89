"""CPT training: DeepSpeed engine loop and launcher."""
