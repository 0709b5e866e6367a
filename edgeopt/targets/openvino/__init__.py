"""OpenVINO: IR with fp32 or fp16-compressed weights, NNCF post-training int8, bf16 where the CPU has it."""
