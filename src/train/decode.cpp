#include "train/decode.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/timer.h"
#include "nn/ctc.h"
#include "train/speech_batch.h"

namespace chorus::train {

namespace {

// log-softmax of row (V) into out, over the real vocabulary.
void log_softmax(const float* row, int V, std::vector<float>& out) {
  out.resize(V);
  float mx = row[0];
  for (int v = 1; v < V; ++v) mx = std::max(mx, row[v]);
  double z = 0.0;
  for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v] - mx));
  const float lz = mx + static_cast<float>(std::log(z));
  for (int v = 0; v < V; ++v) out[v] = row[v] - lz;
}

// True when the tail of seq is one n-gram repeated `times` times.
bool looping(const std::vector<uint32_t>& seq, int times) {
  for (int n = 1; n <= 4; ++n) {
    const int need = n * times;
    if (static_cast<int>(seq.size()) < need) continue;
    bool rep = true;
    for (int k = 1; k < times && rep; ++k)
      for (int j = 0; j < n; ++j)
        if (seq[seq.size() - 1 - j] != seq[seq.size() - 1 - j - k * n]) {
          rep = false;
          break;
        }
    if (rep) return true;
  }
  return false;
}

struct Beam {
  std::vector<uint32_t> tokens;
  double logp = 0.0;   // the ranking score: attention, or joint with CTC
  double att = 0.0;    // attention log-probability
  nn::CtcPrefix ctc;       // joint decoding only
  bool done = false;
  bool looped = false;
};

}  // namespace

std::vector<Transcript> transcribe_batch(models::SpeechSeq2Seq& model, const data::Tokenizer& tok,
                                         const models::SpeechBatch& b, const DecodeOptions& opt,
                                         const std::vector<std::string>& languages_in, DecodeTiming* timing) {
  CHORUS_CHECK(opt.beam >= 1, "beam: must be >= 1, got %d", opt.beam);
  Timer timer;
  models::SpeechEncoder& enc = model.encoder();
  models::Gpt& dec = model.decoder();
  const int B = b.B, K = opt.beam, V = model.config().decoder.vocab_size, Vp = model.config().decoder.padded_vocab();
  const int d = enc.config().n_embd;
  const uint32_t eot = tok.eot();
  enc.forward(b.feats.data(), b.n_frames.data(), B, b.F);
  const int S = enc.memory_rows();
  std::vector<float> mem(static_cast<size_t>(B) * S * d), mem_k(static_cast<size_t>(B) * K * S * d);
  enc.memory_f32(mem.data());
  std::vector<int> len_k(static_cast<size_t>(B) * K);
  for (int i = 0; i < B; ++i)
    for (int k = 0; k < K; ++k) {
      std::copy_n(mem.begin() + static_cast<size_t>(i) * S * d, static_cast<size_t>(S) * d,
                  mem_k.begin() + (static_cast<size_t>(i) * K + k) * S * d);
      len_k[i * K + k] = enc.memory_len()[i];
    }
  // CTC log-probabilities per clip, for joint scoring and the decoder's CTC
  // alignment prior (a model with one: each step's cross-attention gets the
  // prior of its hypothesis' bytes, as in training).
  std::vector<std::vector<float>> ctc_lp;
  const bool joint = opt.ctc_weight > 0.0f;
  const bool prior = model.config().prior.enabled;
  const bool track_ctc = joint || prior;  // each beam keeps its CTC prefix state
  const double lam = opt.ctc_weight;
  if (track_ctc) {
    ctc_lp.resize(B);
    for (int i = 0; i < B; ++i) {
      ctc_lp[i].resize(static_cast<size_t>(enc.ctc_rows()) * enc.ctc_vocab());
      enc.ctc_log_probs(i, ctc_lp[i].data());
    }
  }
  const double encoder_s = timer.seconds();
  const int R = B * K;
  dec.reset_cache(R);
  dec.set_decode_memory(mem_k.data(), len_k.data(), S);
  dec.set_decode_bias(nullptr);  // the prompt's steps: no prior
  std::vector<float> bias;

  std::vector<std::string> languages = languages_in.empty() ? tok.languages() : languages_in;
  std::vector<std::string> lang(B, opt.lang);
  std::vector<int32_t> in(R, static_cast<int32_t>(tok.special("<|startoftranscript|>")));
  std::vector<float> lp;
  const float* logits = dec.decode_step(in.data(), 0);
  if (opt.lang.empty()) {  // language detection: the most likely language token
    for (int i = 0; i < B; ++i) {
      const float* row = logits + static_cast<size_t>(i) * K * Vp;
      float best = -std::numeric_limits<float>::infinity();
      for (const auto& l : languages) {
        if (l.empty()) continue;
        const float v = row[tok.special("<|" + l + "|>")];
        if (v > best) {
          best = v;
          lang[i] = l;
        }
      }
    }
  }
  const int CV = enc.ctc_vocab(), blank = enc.ctc_blank();
  std::vector<std::vector<Beam>> beams(B, std::vector<Beam>(K));
  for (int i = 0; i < B; ++i) {
    if (track_ctc) beams[i][0].ctc = nn::ctc_prefix_root(ctc_lp[i].data(), enc.ctc_len()[i], CV, blank);
    for (int k = 1; k < K; ++k) beams[i][k].logp = -std::numeric_limits<double>::infinity();  // one live start
  }
  // The prior of each row's hypothesis for the next step (rows of dead beams: none).
  const auto set_prior = [&] {
    if (!prior) return;
    bias.assign(static_cast<size_t>(R) * S, 0.0f);
    for (int i = 0; i < B; ++i)
      for (int k = 0; k < K; ++k) {
        const Beam& bm = beams[i][k];
        if (bm.done || !std::isfinite(bm.logp)) continue;
        nn::ctc_alignment_prior(bm.ctc, model.config().prior.window, model.config().prior.floor,
                                enc.config().ctc_upsample(), bias.data() + static_cast<size_t>(i * K + k) * S);
      }
    dec.set_decode_bias(bias.data());
  };
  int pos = 1;
  for (int j = 1; j < 4; ++j, ++pos) {
    for (int i = 0; i < B; ++i)
      for (int k = 0; k < K; ++k) in[i * K + k] = speech_prompt(tok, lang[i])[j];
    if (j == 3) set_prior();  // this step predicts the first transcript token
    logits = dec.decode_step(in.data(), pos);
  }
  // logits now predict the first transcript token at every row.
  const int ctx = model.config().decoder.context;
  const int max_new = std::min(opt.max_new_tokens, ctx - pos);
  std::vector<std::vector<Beam>> finished(B);
  // Text tokens and <|endoftext|> only: no other special token inside a transcript.
  std::vector<char> is_allowed(V, 1);
  for (const char* sp : {"<|startoftranscript|>", "<|transcribe|>", "<|notimestamps|>"}) is_allowed[tok.special(sp)] = 0;
  for (const auto& l : tok.languages()) is_allowed[tok.special("<|" + l + "|>")] = 0;
  auto allowed = [&](uint32_t id) { return is_allowed[id] != 0; };
  std::vector<int> src(R);
  for (int step = 0; step < max_new; ++step) {
    bool any_live = false;
    for (int i = 0; i < B; ++i) {
      struct Cand {
        double logp;  // ranking score
        double att;
        int k;
        uint32_t tok;
        nn::CtcPrefix ctc;
      };
      std::vector<Cand> cands;
      for (int k = 0; k < K; ++k) {
        Beam& bm = beams[i][k];
        if (bm.done || !std::isfinite(bm.logp)) continue;
        log_softmax(logits + static_cast<size_t>(i * K + k) * Vp, V, lp);
        // top K tokens of this beam
        std::vector<uint32_t> idx;
        const bool eot_ok = step >= opt.min_new_tokens;
        for (int v = 0; v < V; ++v)
          if (allowed(static_cast<uint32_t>(v)) && (eot_ok || static_cast<uint32_t>(v) != eot))
            idx.push_back(static_cast<uint32_t>(v));
        // Joint decoding looks at more attention candidates: CTC may reorder them.
        const int top = std::min<int>(joint ? std::max(K + 1, 8) : K + 1, static_cast<int>(idx.size()));
        std::partial_sort(idx.begin(), idx.begin() + top, idx.end(),
                          [&](uint32_t a, uint32_t c) { return lp[a] > lp[c]; });
        for (int t = 0; t < top; ++t) {
          const uint32_t id = idx[t];
          Cand c{bm.att + lp[id], bm.att + lp[id], k, id, {}};
          if (joint) {
            const float* L = ctc_lp[i].data();
            const int Ti = enc.ctc_len()[i];
            double ctc_score;
            if (id == eot) {
              ctc_score = nn::ctc_prefix_final(bm.ctc);
            } else {
              c.ctc = bm.ctc;
              const std::string& bytes = tok.token_bytes(id);
              for (unsigned char ch : bytes) c.ctc = nn::ctc_prefix_extend(c.ctc, static_cast<int>(ch) + 1, L, Ti, CV, blank);
              ctc_score = bytes.empty() ? bm.ctc.score : c.ctc.score;
            }
            c.logp = (1.0 - lam) * c.att + lam * ctc_score;
          }
          cands.push_back(std::move(c));
        }
      }
      std::sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& c) { return a.logp > c.logp; });
      std::vector<Beam> next;
      std::vector<int> next_src;
      for (const Cand& c : cands) {
        if (static_cast<int>(next.size()) == K) break;
        Beam nb = beams[i][c.k];
        nb.logp = c.logp;
        nb.att = c.att;
        if (joint && c.tok != eot) nb.ctc = c.ctc;
        if (c.tok == eot) {
          nb.done = true;
          finished[i].push_back(nb);
          if (static_cast<int>(finished[i].size()) >= K) break;
          continue;
        }
        nb.tokens.push_back(c.tok);
        if (prior && !joint)  // joint scoring extended the candidates' prefixes already
          for (unsigned char ch : tok.token_bytes(c.tok))
            nb.ctc = nn::ctc_prefix_extend(nb.ctc, static_cast<int>(ch) + 1, ctc_lp[i].data(), enc.ctc_len()[i], CV,
                                           blank);
        if (step >= opt.min_new_tokens && looping(nb.tokens, opt.max_repeat_ngram + 1)) {
          nb.looped = true;
          nb.done = true;
          finished[i].push_back(nb);
          continue;
        }
        next.push_back(nb);
        next_src.push_back(i * K + c.k);
      }
      if (static_cast<int>(finished[i].size()) >= K || (K == 1 && !finished[i].empty())) next.clear();
      for (int k = 0; k < K; ++k) {
        if (k < static_cast<int>(next.size())) {
          beams[i][k] = next[k];
          src[i * K + k] = next_src[k];
          in[i * K + k] = static_cast<int32_t>(next[k].tokens.back());
          any_live = true;
        } else {
          beams[i][k] = Beam{};
          beams[i][k].done = true;
          src[i * K + k] = i * K;
          in[i * K + k] = static_cast<int32_t>(eot);
        }
      }
    }
    if (!any_live || pos >= ctx) break;
    if (K > 1) dec.reorder_cache(src.data());
    set_prior();
    logits = dec.decode_step(in.data(), pos++);
  }
  std::vector<Transcript> out(B);
  for (int i = 0; i < B; ++i) {
    for (auto& bm : beams[i])
      if (!bm.done && !bm.tokens.empty()) finished[i].push_back(bm);  // ran out of length
    Transcript& t = out[i];
    t.lang = lang[i];
    if (finished[i].empty()) continue;
    double best = -std::numeric_limits<double>::infinity();
    for (const Beam& bm : finished[i]) {
      const double n = static_cast<double>(bm.tokens.size() + 1);
      double score = bm.att / n;
      if (joint) {  // the full CTC likelihood of the finished hypothesis
        const std::vector<int32_t> lab = ctc_labels(tok, bm.tokens);
        const double c = nn::ctc_log_likelihood(ctc_lp[i].data(), enc.ctc_len()[i], enc.ctc_vocab(), lab.data(),
                                                static_cast<int>(lab.size()), enc.ctc_blank());
        score = ((1.0 - lam) * bm.att + lam * (std::isfinite(c) ? c : -1e9)) / n;
      }
      if (score > best) {
        best = score;
        t.tokens = bm.tokens;
        t.avg_logprob = bm.att / n;
        t.loop_stopped = bm.looped;
      }
    }
    t.text = tok.decode(t.tokens);
  }
  if (timing != nullptr) {
    timing->encoder_s += encoder_s;
    timing->decoder_s += timer.seconds() - encoder_s;
  }
  return out;
}

std::vector<std::string> ctc_greedy_batch(models::SpeechSeq2Seq& model, const models::SpeechBatch& b) {
  models::SpeechEncoder& enc = model.encoder();
  enc.forward(b.feats.data(), b.n_frames.data(), b.B, b.F);
  const int V = enc.ctc_vocab();
  std::vector<std::string> out(b.B);
  std::vector<float> lp;
  for (int i = 0; i < b.B; ++i) {
    lp.resize(static_cast<size_t>(enc.ctc_rows()) * V);  // every row of the batch; the clip's are the first
    enc.ctc_log_probs(i, lp.data());
    for (int32_t c : nn::ctc_greedy(lp.data(), enc.ctc_len()[i], V, enc.ctc_blank()))
      out[i].push_back(static_cast<char>(c - 1));  // class b + 1 is byte b
  }
  return out;
}

}  // namespace chorus::train
