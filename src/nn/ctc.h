// Connectionist temporal classification (Graves et al. 2006, "Connectionist
// Temporal Classification: Labelling Unsegmented Sequence Data with Recurrent
// Neural Networks", ICML): the loss -log p(target | x) summed over all
// alignments, its gradient with respect to the logits, and the inference-time
// helpers (likelihood of a hypothesis, greedy decoding).
//
// The forward-backward recursions (sec. 4.1) run over the extended label
// sequence l' = (blank, l_1, blank, l_2, ..., l_L, blank) of S = 2L + 1 states
// in log space in double, with log-sum-exp; the per-frame log-softmax over V is
// computed in fp32 (max subtraction) and stored in double. The gradient with
// respect to the unnormalised logits u_t (softmax included, eq. 16) is
//   d loss / d u_t(v) = y_t(v) - sum_{s : l'_s = v} exp(alpha_t(s) + beta_t(s) - log p),
// where alpha_t(s) includes frame t's emission and beta_t(s) covers frames
// after t only.
//
// Infeasible items: an alignment needs at least L + (number of adjacent equal
// labels) frames, since a repeated label needs a blank between its copies.
// Items with fewer valid frames have p = 0: their loss is +inf and their
// gradient is zero (so one such item does not poison a batch); ctc_loss
// returns how many there were, for the caller to log. This is PyTorch's
// CTCLoss(zero_infinity=False) loss with zero_infinity=True's gradient.
//
// Work and memory per item: O(T (V + S)) time; (T, S) doubles for the
// log-probabilities of l' and each of alpha and beta, plus two rows of V
// floats, all in the calling thread's grow-only scratch (nothing allocated
// per call in steady state).
#pragma once

#include <cstdint>
#include <vector>

namespace chorus::nn {

// logits (B, Tmax, V) in T (float, bf16, fp16), row stride V.
// in_len (B): valid frames of item b, 0 <= in_len[b] <= Tmax.
// targets: labels of item b at targets + tgt_off[b], tgt_len[b] >= 0 of them,
//   each in [0, V) and != blank (checked: chorus::Error otherwise).
// losses (B) fp32: -log p(target_b | x_b) (+inf when infeasible).
// dlogits (B, Tmax, V): OVERWRITTEN with grad_scale[b] * d loss_b / d logits_b
//   (zero rows for t >= in_len[b], all zero for infeasible items); nullptr
//   skips the gradient. It may alias logits (each row is read before it is
//   written).
// grad_scale (B) or nullptr (all 1), e.g. 1 / (B * tgt_len[b]) for a mean.
// Parallel over items (OpenMP; call from outside parallel regions).
// Returns the number of infeasible items.
template <typename T>
int ctc_loss(float* losses, T* dlogits, const T* logits, const int* in_len, const int32_t* targets,
             const int* tgt_off, const int* tgt_len, const float* grad_scale, int B, int Tmax, int V,
             int blank);

// log p(target | x) for one sequence from log-probabilities log_probs (Tn, V)
// fp32 (each row a log-softmax), target of n labels (in [0, V), != blank).
// -infinity when infeasible. For rescoring hypotheses at inference; serial,
// O(Tn * (2n + 1)) time, O(n) memory.
double ctc_log_likelihood(const float* log_probs, int Tn, int V, const int32_t* target, int n, int blank);

// CTC prefix scoring for joint CTC/attention beam search (Graves 2012;
// Watanabe et al. 2017, "Hybrid CTC/attention", section III-B), on
// log-probabilities (Tn, V) fp32: for a prefix h, rn[t] / rb[t] = log P(h
// over frames 0..t, ending in a non-blank / a blank), score = log P(h is a
// prefix of the labelling).
struct CtcPrefix {
  std::vector<double> rn, rb;
  double score = 0.0;
  int last = -1;     // last label (-1: none)
  bool root = true;  // the empty prefix
};
CtcPrefix ctc_prefix_root(const float* log_probs, int Tn, int V, int blank);
// h followed by label c (!= blank). O(Tn).
CtcPrefix ctc_prefix_extend(const CtcPrefix& h, int c, const float* log_probs, int Tn, int V, int blank);
// log P(labelling == h): equals ctc_log_likelihood of h's labels.
double ctc_prefix_final(const CtcPrefix& h);

// The CTC alignment prior of the speech decoder's cross-attention: where in
// the audio the label that follows prefix h is, from the CTC head alone, so the
// decoder reads the right frames from its first step instead of learning to
// align (an attention prior as in FastPitch / RAD-TTS, here computed from the
// CTC head at training and at inference alike, as triggered attention does
// (Moritz, Hori & Le Roux 2019)). With rho(t) = log P(frames 0..t collapse to
// h) = logaddexp(rn[t], rb[t]), pi = softmax over t of rho is where h has been
// read up to (a peaky CTC puts it on the gap between h's last label and the
// next one); prior(t) = sum of pi over [t - window, t], the `window` frames
// after it; out = log(prior + floor), a bias for the attention scores (0
// inside the window, log(floor) far from it), with the prior averaged over
// each `pool` frames (an encoder row that emits pool CTC frames): out has
// ceil(Tn / pool) entries, Tn = h.rn.size(). A prefix the frames cannot hold
// at all (rho -inf everywhere) gives out = 0: no prior.
void ctc_alignment_prior(const CtcPrefix& h, int window, float floor, int pool, float* out);

// Greedy (best path) decoding: argmax per frame of logits (Tn, V) (or
// log-probabilities: the argmax is the same; the first maximum on ties),
// repeats collapsed, blanks dropped.
std::vector<int32_t> ctc_greedy(const float* logits, int Tn, int V, int blank);

}  // namespace chorus::nn
