"""Federation layer: tree topology, jobs, serde (domain <-> protobuf), servicers and mTLS."""
