"""The miniature world: a tiny SD1-layout latent text-to-image model family (64 px) that runs on a
laptop CPU, loads both here and inside ComfyUI, and serves as the project's demo and proof."""
