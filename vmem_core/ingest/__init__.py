"""Getting images in: datasets, image decoding and limits, names, the bulk build pipeline, Ray, caches."""
