"""Generated gRPC and protobuf code for the wire package phe_fl.v2 (see proto/)."""
