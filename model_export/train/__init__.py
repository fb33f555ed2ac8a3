"""`python -m model_export train`: a folder of labelled photos to a verified, served model.

One module per job, in the order a run uses them:

- `data`: the class folders, their checks, the split, and reading an image with the service's
  own decoding and preprocessing;
- `features`: the frozen backbone's pooled features, batched, on every core or CUDA, cached;
- `head`: the new linear classifier on those features, with early stopping;
- `finetune`: `--unfreeze N`, the last stages trained too, on augmented images;
- `report`: validation metrics (scikit-learn), the confusion matrix and learning curve PNGs
  (matplotlib) and one JSON;
- `checkpoint`: the trained network saved so the exporter reloads it, and its weights record;
- `cli`: the command, which runs the steps above and exports through the exporter's own
  verification.
"""
