"""What each command does, callable in-process (the study runs them): train, generate, classify
(and its batched stage, ensemble), evaluate and report, and the fit sequence that train and
classify share."""
