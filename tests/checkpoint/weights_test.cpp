// Weights files carry a SHA-256 per tensor: one flipped byte in a tensor's
// data (which HDF5 itself does not notice: raw data has no checksum) is
// refused on every read path, naming the file, the tensor and both digests;
// a file without digests (an older chorus) still loads. Quantised (int8)
// files read back dequantised and are checked the same way.
#include <gtest/gtest.h>

#include <hdf5.h>

#include <algorithm>
#include <filesystem>

#include "backend/cpu/gemv.h"
#include "checkpoint/tools.h"
#include "checkpoint/weights.h"
#include "ckpt_fixture.h"
#include "core/error.h"
#include "nn/matmul.h"

using namespace ckpt_test;

namespace {

// The file offset of a contiguous dataset's first data byte.
uint64_t data_offset(const std::string& path, const std::string& dataset) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t ds = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
  const haddr_t off = H5Dget_offset(ds);
  H5Dclose(ds);
  H5Fclose(f);
  EXPECT_NE(off, HADDR_UNDEF) << dataset;
  return off;
}

void drop_digests(const std::string& path) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t g = H5Gopen2(f, "params", H5P_DEFAULT);
  hsize_t n = 0;
  H5Gget_num_objs(g, &n);
  for (hsize_t i = 0; i < n; ++i) {
    char name[256];
    H5Gget_objname_by_idx(g, i, name, sizeof name);
    hid_t ds = H5Dopen2(g, name, H5P_DEFAULT);
    EXPECT_GE(H5Adelete(ds, "sha256"), 0) << name;
    H5Dclose(ds);
  }
  H5Gclose(g);
  H5Fclose(f);
}

}  // namespace

TEST(WeightsDigest, AFlippedDataByteIsRefusedOnEveryRead) {
  TempDir tmp("weights");
  TinyState s;
  const std::string ckpt = s.save(tmp / "run").path;
  const std::string out = tmp / "model.h5";
  checkpoint::export_weights(ckpt, out);
  {
    models::Gpt g(tiny_config(), 1, 4);
    checkpoint::load_weights(out, g, s.tok_hash);  // intact: loads
    EXPECT_TRUE(same_floats(g.params(), s.st.params));
  }
  // Byte 5 of the data of one LayerNorm bias (a small tensor in the middle).
  flip_byte(out, data_offset(out, "params/h.1.ln_1.bias") + 5);
  {
    models::Gpt g(tiny_config(), 1, 4);
    const std::string what =
        expect_throw_with<Error>([&] { checkpoint::load_weights(out, g, s.tok_hash); }, 
                                 {out, "tensor 'params/h.1.ln_1.bias' is damaged", "SHA-256", "the file records"});
    EXPECT_EQ(what.find(".cpp"), std::string::npos) << "no source path in the message: " << what;
  }
  expect_throw_with<Error>([&] { checkpoint::read_weights_tensors(out); }, {"params/h.1.ln_1.bias", "damaged"});
  expect_throw_with<Error>([&] { checkpoint::hash(out, false); }, {"damaged"});
}

TEST(WeightsDigest, AFileWithoutDigestsStillLoads) {
  TempDir tmp("weights");
  TinyState s;
  const std::string out = tmp / "model.h5";
  checkpoint::export_weights(s.save(tmp / "run").path, out);
  drop_digests(out);
  models::Gpt g(tiny_config(), 1, 4);
  checkpoint::load_weights(out, g, s.tok_hash);
  EXPECT_TRUE(same_floats(g.params(), s.st.params));
  EXPECT_EQ(checkpoint::read_weights_tensors(out).size(), s.model.param_table().size());
}

// `chorus quantize` files (version 2): the decode matrices stored as int8
// codes + per-row scales read back as their dequantised values on every path,
// the rest unchanged; the digests cover the dequantised data, so a flipped
// code is refused; missing scales are named.
TEST(WeightsInt8, QuantisedTensorsReadBackDequantisedAndAreChecked) {
  TempDir tmp("weights");
  TinyState s;
  const auto params = s.model.params();
  std::vector<nn::PackedWeight> q(s.model.param_table().size());
  std::vector<checkpoint::WeightsTensorView> views;
  size_t n_int8 = 0;
  for (size_t i = 0; i < s.model.param_table().size(); ++i) {
    const auto& p = s.model.param_table()[i];
    checkpoint::WeightsTensorView v{p.name, p.shape, params.data() + p.offset};
    if (models::decode_int8_tensor(p.name)) {
      q[i] = nn::quantize_int8(params.data() + p.offset, int(p.shape[0]), int(p.shape[1]));
      v.codes = q[i].q.data();
      v.scale = q[i].scale.data();
      ++n_int8;
    }
    views.push_back(v);
  }
  EXPECT_EQ(n_int8, 4u * tiny_config().n_layer + 1);  // the block matrices and wte
  checkpoint::WeightsHeader h;
  h.config = tiny_config();
  h.tokenizer_hash = s.tok_hash;
  h.quantization = "int8";
  const std::string out = tmp / "q.h5";
  checkpoint::write_weights_file(out, h, views);

  checkpoint::WeightsHeader back;
  const auto tensors = checkpoint::read_weights_tensors(out, &back);
  EXPECT_EQ(back.quantization, "int8");
  EXPECT_EQ(back.model_type, "gpt");
  ASSERT_EQ(tensors.size(), views.size());
  models::Gpt g(tiny_config(), 1, 4);
  checkpoint::load_weights(out, g, s.tok_hash);
  for (size_t i = 0; i < views.size(); ++i) {
    const auto& p = s.model.param_table()[i];
    auto t = std::find_if(tensors.begin(), tensors.end(), [&](const auto& x) { return x.name == p.name; });
    ASSERT_NE(t, tensors.end()) << p.name;
    std::vector<float> want(params.begin() + p.offset, params.begin() + p.offset + p.numel);
    if (views[i].codes != nullptr) {
      backend::cpu::dequantize_rows_int8(q[i].q.data(), q[i].scale.data(), int(p.shape[0]), int(p.shape[1]),
                                         want.data());
      EXPECT_FALSE(same_floats(want, std::span<const float>(params.data() + p.offset, p.numel))) << p.name;
    }
    EXPECT_TRUE(same_floats(t->data, want)) << p.name;
    EXPECT_TRUE(same_floats(std::span<const float>(g.params().data() + p.offset, p.numel), want)) << p.name;
  }

  // One flipped code byte: the dequantised data no longer has its digest.
  const std::string damaged = tmp / "damaged.h5";
  std::filesystem::copy_file(out, damaged);
  flip_byte(damaged, data_offset(damaged, "params/h.0.mlp.c_fc.weight") + 3);
  expect_throw_with<Error>([&] { checkpoint::read_weights_tensors(damaged); },
                           {"params/h.0.mlp.c_fc.weight", "damaged"});
  // No scales for a quantised tensor.
  {
    hid_t f = H5Fopen(out.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    EXPECT_GE(H5Ldelete(f, "scales/wte.weight", H5P_DEFAULT), 0);
    H5Fclose(f);
  }
  expect_throw_with<Error>([&] { checkpoint::read_weights_tensors(out); },
                           {out, "params/wte.weight", "no scales", "scales/wte.weight"});
}
