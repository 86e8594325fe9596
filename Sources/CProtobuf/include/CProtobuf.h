// Umbrella header for the protobuf-c code generated from schemas/ by tools/regen-protos.
#include "onnx.pb-c.h"
#include "spp_model.pb-c.h"
