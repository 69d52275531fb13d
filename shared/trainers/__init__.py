"""Trainers, one explicit loop each: ``ssl`` (view source -> method -> step), ``gan`` (D and G steps,
conditional or not), ``adversarial`` (a transforming generator against critics), ``linear_eval``
(frozen features once, then a linear head or kNN). ``conditions`` holds the GAN condition providers
(class labels, IC-GAN instances); ``common`` what every trainer shares."""
