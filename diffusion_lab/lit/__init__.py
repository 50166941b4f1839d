"""Lightning glue: the DDPM LightningModule, callbacks, figures and learning-rate schedules."""
