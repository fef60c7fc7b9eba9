"""Caption recovery for audits without the training caption (paper Appendix A), strongest source
first: :mod:`.metadata` (what the file's header says), :mod:`.ranking` over :mod:`.weight_delta`
(Eq. 17/19 on the cross-attention K/V change), :mod:`.pez` (Algorithm 1 through the text encoder of
:mod:`.encoders`). Plain torch; no ComfyUI."""
