// Weights files carry a SHA-256 per tensor: one flipped byte in a tensor's
// data (which HDF5 itself does not notice: raw data has no checksum) is
// refused on every read path, naming the file, the tensor and both digests;
// a file without digests (an older chorus) still loads.
#include <gtest/gtest.h>

#include <hdf5.h>

#include "checkpoint/tools.h"
#include "checkpoint/weights.h"
#include "ckpt_fixture.h"
#include "core/error.h"

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
