//! Batch generation (`roentgen batch`): prompt tables, job plans and shards, manifests.
