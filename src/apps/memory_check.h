// A cheap lower bound of the memory a job needs, checked against what the
// machine has before the model is allocated, so that a batch or width that
// cannot fit is refused naming the flags instead of ending in std::bad_alloc
// (or the kernel's OOM killer) later.
#pragma once

#include <cstdint>
#include <string>

namespace chorus::apps {

// Bytes the kernel says can be allocated now: MemAvailable of /proc/meminfo,
// else free + cached pages from sysconf; 0 when unknown.
uint64_t memory_available();

// Lower bound of the bytes one rank of a GPT holds: fp32 weights (and, when
// training, fp32 gradients and two Adam moments), plus per token of a batch x
// seq micro-batch the residual stream, the MLP and the logits of each layer.
// vocab 0 (unknown yet) counts no embedding or logits; tp divides the weights.
double gpt_bytes_lower_bound(int n_layer, int n_embd, int vocab, int context, int batch, int seq, bool train,
                             int tp = 1);

// Throws chorus::Error when `bytes` exceed memory_available(): "<command>
// needs at least X GB (<what>) but Y GB are available ...; reduce <flags>".
void check_memory_fits(const std::string& command, double bytes, const std::string& what,
                       const std::string& flags);

}  // namespace chorus::apps
