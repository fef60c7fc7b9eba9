"""The shipped workflows (UI-format JSON beside this file, served by ComfyUI as the pack's
templates) and the tools that keep them honest without a browser: node schemas
(:mod:`.schema`), validation (:mod:`.validate`), conversion to API format (:mod:`.convert`)."""
