//! `Array`: a lazy n-dimensional `f64` array in a grid of blocks (Dask's `dask.array`).
