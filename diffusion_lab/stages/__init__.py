"""The study command's stages: budget, folder, stage configs, Parts 1-3 and study.md."""
