#include "checkpoint/shard_file.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/hdf5.h"

namespace chorus::checkpoint {

namespace {

using FileId = h5::Id<H5Fclose>;
using GroupId = h5::Id<H5Gclose>;

std::string hdf5_says() {
  std::string e = h5::last_error();
  return e.empty() ? std::string() : " (HDF5: " + e + ")";
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + ")";
}

// Creation property lists with object time stamps off (byte-identical files).
h5::PlistId untimed(hid_t cls) {
  h5::PlistId p(H5Pcreate(cls));
  CHORUS_CHECK(p.valid(), "checkpoint: cannot create an HDF5 property list%s", hdf5_says().c_str());
  H5Pset_obj_track_times(p.get(), false);
  return p;
}

// ---- attributes on any object ------------------------------------------------

void put_attr(hid_t obj, const char* name, hid_t file_type, hid_t mem_type, hid_t space, const void* value,
              const std::string& where) {
  h5::AttrId a(H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT));
  CHORUS_CHECK(a.valid() && H5Awrite(a.get(), mem_type, value) >= 0, "%s: cannot write attribute '%s'%s",
               where.c_str(), name, hdf5_says().c_str());
}

void put_i64(hid_t obj, const char* name, int64_t v, const std::string& where) {
  h5::SpaceId s(H5Screate(H5S_SCALAR));
  put_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, s.get(), &v, where);
}

void put_i64s(hid_t obj, const char* name, const std::vector<int64_t>& v, const std::string& where) {
  hsize_t n = v.size();
  h5::SpaceId s(H5Screate_simple(1, &n, nullptr));
  put_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, s.get(), v.data(), where);
}

void put_str(hid_t obj, const char* name, const std::string& v, const std::string& where) {
  h5::TypeId t(H5Tcopy(H5T_C_S1));
  H5Tset_size(t.get(), std::max<size_t>(1, v.size()));
  H5Tset_strpad(t.get(), H5T_STR_NULLPAD);
  h5::SpaceId s(H5Screate(H5S_SCALAR));
  std::string padded = v.empty() ? std::string(1, '\0') : v;
  put_attr(obj, name, t.get(), t.get(), s.get(), padded.data(), where);
}

h5::AttrId open_attr(hid_t obj, const char* name, const std::string& where) {
  const htri_t e = H5Aexists(obj, name);
  CHORUS_CHECK(e > 0, "%s: attribute '%s' is missing%s", where.c_str(), name,
               e < 0 ? hdf5_says().c_str() : "");
  h5::AttrId a(H5Aopen(obj, name, H5P_DEFAULT));
  CHORUS_CHECK(a.valid(), "%s: cannot open attribute '%s'%s", where.c_str(), name, hdf5_says().c_str());
  return a;
}

std::vector<int64_t> get_i64s(hid_t obj, const char* name, const std::string& where) {
  h5::AttrId a = open_attr(obj, name, where);
  h5::TypeId t(H5Aget_type(a.get()));
  CHORUS_CHECK(H5Tget_class(t.get()) == H5T_INTEGER, "%s: attribute '%s': expected integers", where.c_str(),
               name);
  h5::SpaceId s(H5Aget_space(a.get()));
  const hssize_t n = H5Sget_simple_extent_npoints(s.get());
  CHORUS_CHECK(n >= 1 && n <= 16, "%s: attribute '%s': expected 1 to 16 integers, found %lld", where.c_str(),
               name, static_cast<long long>(n));
  std::vector<int64_t> v(static_cast<size_t>(n));
  CHORUS_CHECK(H5Aread(a.get(), H5T_NATIVE_INT64, v.data()) >= 0, "%s: cannot read attribute '%s'%s",
               where.c_str(), name, hdf5_says().c_str());
  return v;
}

int64_t get_i64(hid_t obj, const char* name, const std::string& where) {
  auto v = get_i64s(obj, name, where);
  CHORUS_CHECK(v.size() == 1, "%s: attribute '%s': expected one integer, found %zu", where.c_str(), name,
               v.size());
  return v[0];
}

std::string get_str(hid_t obj, const char* name, const std::string& where) {
  h5::AttrId a = open_attr(obj, name, where);
  h5::TypeId t(H5Aget_type(a.get()));
  CHORUS_CHECK(H5Tget_class(t.get()) == H5T_STRING && !H5Tis_variable_str(t.get()),
               "%s: attribute '%s': expected a fixed-length string", where.c_str(), name);
  std::string v(H5Tget_size(t.get()), '\0');
  CHORUS_CHECK(H5Aread(a.get(), t.get(), v.data()) >= 0, "%s: cannot read attribute '%s'%s", where.c_str(),
               name, hdf5_says().c_str());
  v.resize(std::strlen(v.c_str()));
  return v;
}

void expect_i64(hid_t obj, const char* name, int64_t want, const std::string& where) {
  const int64_t got = get_i64(obj, name, where);
  CHORUS_CHECK(got == want, "%s: attribute '%s' is %lld, expected %lld", where.c_str(), name,
               static_cast<long long>(got), static_cast<long long>(want));
}

// ---- files ---------------------------------------------------------------------

FileId create_file(const std::string& path) {
  h5::quiet_errors();
  h5::PlistId fcpl = untimed(H5P_FILE_CREATE);
  FileId f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.get(), H5P_DEFAULT));
  CHORUS_CHECK(f.valid(), "checkpoint: cannot create '%s'%s", path.c_str(), hdf5_says().c_str());
  return f;
}

void close_file(FileId& f, const std::string& path) {
  CHORUS_CHECK(H5Fclose(f.get()) >= 0, "checkpoint: closing '%s' failed (disk full?)%s", path.c_str(),
               hdf5_says().c_str());
  f = FileId();  // already closed: drop the id without closing it twice
}

GroupId create_group(hid_t parent, const char* name, const std::string& where) {
  h5::PlistId gcpl = untimed(H5P_GROUP_CREATE);
  GroupId g(H5Gcreate2(parent, name, H5P_DEFAULT, gcpl.get(), H5P_DEFAULT));
  CHORUS_CHECK(g.valid(), "%s: cannot create group '%s'%s", where.c_str(), name, hdf5_says().c_str());
  return g;
}

void write_dataset(hid_t group, const std::string& name, const std::vector<int64_t>& shape, const float* data,
                   const std::string& where, h5::DatasetId* out) {
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  h5::SpaceId space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  h5::PlistId dcpl = untimed(H5P_DATASET_CREATE);
  h5::DatasetId ds(
      H5Dcreate2(group, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
  CHORUS_CHECK(ds.valid(), "%s: cannot create dataset '%s'%s", where.c_str(), name.c_str(),
               hdf5_says().c_str());
  CHORUS_CHECK(H5Dwrite(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0,
               "%s: writing dataset '%s' failed (disk full?)%s", where.c_str(), name.c_str(),
               hdf5_says().c_str());
  *out = std::move(ds);
}

void put_tensor_attrs(hid_t ds, const TensorInfo& t, int tp_rank, int tp_size, const std::string& where) {
  put_i64s(ds, "global_shape", t.global_shape, where);
  put_i64(ds, "tp_axis", t.tp_axis, where);
  put_i64(ds, "tp_parts", t.tp_parts, where);
  put_i64(ds, "tp_rank", tp_rank, where);
  put_i64(ds, "tp_size", tp_size, where);
}

void check_tensor_attrs(hid_t ds, const TensorInfo& t, int tp_rank, int tp_size, const std::string& where) {
  const auto gs = get_i64s(ds, "global_shape", where);
  CHORUS_CHECK(gs == t.global_shape, "%s: attribute 'global_shape' is %s, expected %s", where.c_str(),
               shape_str(gs).c_str(), shape_str(t.global_shape).c_str());
  expect_i64(ds, "tp_axis", t.tp_axis, where);
  expect_i64(ds, "tp_parts", t.tp_parts, where);
  expect_i64(ds, "tp_rank", tp_rank, where);
  expect_i64(ds, "tp_size", tp_size, where);
}

std::vector<int64_t> dataset_shape(hid_t ds, const std::string& where) {
  h5::SpaceId space(H5Dget_space(ds));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  CHORUS_CHECK(rank >= 0 && rank <= 8, "%s: cannot read the dataset's dimensions%s", where.c_str(),
               hdf5_says().c_str());
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

h5::DatasetId open_float_dataset(hid_t group, const std::string& name, const std::string& where) {
  const htri_t e = H5Lexists(group, name.c_str(), H5P_DEFAULT);
  CHORUS_CHECK(e > 0, "%s: tensor is missing%s", where.c_str(), e < 0 ? hdf5_says().c_str() : "");
  h5::DatasetId ds(H5Dopen2(group, name.c_str(), H5P_DEFAULT));
  CHORUS_CHECK(ds.valid(), "%s: cannot open the dataset%s", where.c_str(), hdf5_says().c_str());
  h5::TypeId t(H5Dget_type(ds.get()));
  CHORUS_CHECK(H5Tget_class(t.get()) == H5T_FLOAT && H5Tget_size(t.get()) == 4, "%s: expected float32 data",
               where.c_str());
  return ds;
}

void read_all(hid_t ds, float* out, const std::string& where) {
  CHORUS_CHECK(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0,
               "%s: reading the data failed (truncated or corrupt file)%s", where.c_str(),
               hdf5_says().c_str());
}

GroupId open_group(hid_t f, const char* name, const std::string& path) {
  const htri_t e = H5Lexists(f, name, H5P_DEFAULT);
  CHORUS_CHECK(e > 0, "checkpoint file '%s': group '%s' is missing%s", path.c_str(), name,
               e < 0 ? hdf5_says().c_str() : "");
  GroupId g(H5Gopen2(f, name, H5P_DEFAULT));
  CHORUS_CHECK(g.valid(), "checkpoint file '%s': cannot open group '%s'%s", path.c_str(), name,
               hdf5_says().c_str());
  return g;
}

std::vector<std::string> member_names(hid_t group, const std::string& where) {
  std::vector<std::string> names;
  auto cb = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
    static_cast<std::vector<std::string>*>(data)->push_back(name);
    return 0;
  };
  CHORUS_CHECK(H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, nullptr, cb, &names) >= 0,
               "%s: cannot list the datasets%s", where.c_str(), hdf5_says().c_str());
  return names;
}

void check_root(const h5::File& f, const char* format, int64_t tp_rank, int64_t tp_size) {
  const std::string where = "checkpoint file '" + f.path() + "'";
  const std::string got = get_str(f.get(), "format", where);
  CHORUS_CHECK(got == format, "%s: attribute 'format' is '%s', expected '%s'", where.c_str(), got.c_str(),
               format);
  const int64_t version = get_i64(f.get(), "version", where);
  CHORUS_CHECK(version == kShardFileVersion, "%s: attribute 'version' is %lld, this build reads version %lld",
               where.c_str(), static_cast<long long>(version), static_cast<long long>(kShardFileVersion));
  expect_i64(f.get(), "tp_rank", tp_rank, where);
  expect_i64(f.get(), "tp_size", tp_size, where);
}

}  // namespace

void write_model_file(const std::string& path, const std::vector<TensorInfo>& tensors,
                      const std::vector<size_t>& offsets, const float* params, int tp_rank, int tp_size,
                      int64_t step) {
  const std::string where = "checkpoint file '" + path + "'";
  FileId f = create_file(path);
  put_str(f.get(), "format", kModelFileFormat, where);
  put_i64(f.get(), "version", kShardFileVersion, where);
  put_i64(f.get(), "tp_rank", tp_rank, where);
  put_i64(f.get(), "tp_size", tp_size, where);
  put_i64(f.get(), "step", step, where);
  {
    GroupId g = create_group(f.get(), "params", where);
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorInfo& t = tensors[i];
      h5::DatasetId ds;
      write_dataset(g.get(), t.name, nn::local_shape(t.spec(), tp_size), params + offsets[i], where, &ds);
      put_tensor_attrs(ds.get(), t, tp_rank, tp_size, where + " tensor 'params/" + t.name + "'");
    }
  }
  close_file(f, path);
}

void write_optimizer_file(const std::string& path, const std::vector<TensorInfo>& tensors,
                          const std::vector<size_t>& offsets, size_t n_local, FlatRange range,
                          const float* exp_avg, const float* exp_avg_sq, const Layout& layout, int tp_rank,
                          int dp_rank, int64_t step) {
  const std::string where = "checkpoint file '" + path + "'";
  FileId f = create_file(path);
  put_str(f.get(), "format", kOptimizerFileFormat, where);
  put_i64(f.get(), "version", kShardFileVersion, where);
  put_i64(f.get(), "tp_rank", tp_rank, where);
  put_i64(f.get(), "tp_size", layout.tp, where);
  put_i64(f.get(), "dp_rank", dp_rank, where);
  put_i64(f.get(), "dp_size", layout.dp, where);
  put_i64(f.get(), "zero", layout.zero, where);
  put_i64(f.get(), "step", step, where);
  put_i64(f.get(), "flat_begin", static_cast<int64_t>(range.begin), where);
  put_i64(f.get(), "flat_end", static_cast<int64_t>(range.end), where);
  put_i64(f.get(), "flat_numel", static_cast<int64_t>(n_local), where);
  const char* groups[2] = {"exp_avg", "exp_avg_sq"};
  const float* data[2] = {exp_avg, exp_avg_sq};
  for (int k = 0; k < 2; ++k) {
    GroupId g = create_group(f.get(), groups[k], where);
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorInfo& t = tensors[i];
      const size_t n = t.local_numel(layout.tp);
      const size_t b = std::max(offsets[i], range.begin), e = std::min(offsets[i] + n, range.end);
      if (b >= e) continue;
      h5::DatasetId ds;
      write_dataset(g.get(), t.name, {static_cast<int64_t>(e - b)}, data[k] + (b - range.begin), where, &ds);
      const std::string w = where + " tensor '" + groups[k] + "/" + t.name + "'";
      put_tensor_attrs(ds.get(), t, tp_rank, layout.tp, w);
      put_i64s(ds.get(), "local_shape", nn::local_shape(t.spec(), layout.tp), w);
      put_i64(ds.get(), "local_begin", static_cast<int64_t>(b - offsets[i]), w);
      put_i64(ds.get(), "local_end", static_cast<int64_t>(e - offsets[i]), w);
    }
  }
  close_file(f, path);
}

void read_model_file(const std::string& path, const std::vector<TensorInfo>& tensors, int tp_rank,
                     int tp_size, const std::function<float*(size_t)>& dest) {
  h5::File f = h5::File::open_read(path);
  check_root(f, kModelFileFormat, tp_rank, tp_size);
  GroupId g = open_group(f.get(), "params", path);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    const std::string where = "checkpoint file '" + path + "' tensor 'params/" + t.name + "'";
    h5::DatasetId ds = open_float_dataset(g.get(), t.name, where);
    const auto want = nn::local_shape(t.spec(), tp_size);
    const auto got = dataset_shape(ds.get(), where);
    CHORUS_CHECK(got == want, "%s: shape %s, expected %s (shard %d of %d of global %s)", where.c_str(),
                 shape_str(got).c_str(), shape_str(want).c_str(), tp_rank, tp_size,
                 shape_str(t.global_shape).c_str());
    check_tensor_attrs(ds.get(), t, tp_rank, tp_size, where);
    read_all(ds.get(), dest(i), where);
  }
  const auto names = member_names(g.get(), "checkpoint file '" + path + "' group 'params'");
  CHORUS_CHECK(names.size() == tensors.size(),
               "checkpoint file '%s': group 'params' holds %zu tensors, expected %zu", path.c_str(),
               names.size(), tensors.size());
}

void read_optimizer_file(const std::string& path, const std::vector<TensorInfo>& tensors,
                         const FileRecord& rec, int tp_size,
                         const std::function<void(const OptimizerPiece&)>& fn) {
  h5::File f = h5::File::open_read(path);
  check_root(f, kOptimizerFileFormat, rec.tp_rank, tp_size);
  const std::string fwhere = "checkpoint file '" + path + "'";
  expect_i64(f.get(), "dp_rank", rec.dp_rank, fwhere);
  expect_i64(f.get(), "flat_begin", static_cast<int64_t>(rec.flat_begin), fwhere);
  expect_i64(f.get(), "flat_end", static_cast<int64_t>(rec.flat_end), fwhere);
  expect_i64(f.get(), "flat_numel", static_cast<int64_t>(rec.flat_numel), fwhere);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < tensors.size(); ++i) index[tensors[i].name] = i;
  GroupId m = open_group(f.get(), "exp_avg", path), v = open_group(f.get(), "exp_avg_sq", path);
  const auto names = member_names(m.get(), fwhere + " group 'exp_avg'");
  const auto names_v = member_names(v.get(), fwhere + " group 'exp_avg_sq'");
  CHORUS_CHECK(names == names_v, "%s: groups 'exp_avg' and 'exp_avg_sq' hold different tensors (%zu vs %zu)",
               fwhere.c_str(), names.size(), names_v.size());
  uint64_t total = 0;
  std::vector<float> bm, bv;
  for (const auto& name : names) {
    auto it = index.find(name);
    CHORUS_CHECK(it != index.end(), "%s: tensor 'exp_avg/%s' is not in the model's tensor table",
                 fwhere.c_str(), name.c_str());
    const TensorInfo& t = tensors[it->second];
    OptimizerPiece piece;
    piece.tensor = it->second;
    GroupId* groups[2] = {&m, &v};
    std::vector<float>* bufs[2] = {&bm, &bv};
    const char* gnames[2] = {"exp_avg", "exp_avg_sq"};
    for (int k = 0; k < 2; ++k) {
      const std::string where = fwhere + " tensor '" + gnames[k] + "/" + name + "'";
      h5::DatasetId ds = open_float_dataset(groups[k]->get(), name, where);
      check_tensor_attrs(ds.get(), t, rec.tp_rank, tp_size, where);
      const auto ls = get_i64s(ds.get(), "local_shape", where);
      CHORUS_CHECK(ls == nn::local_shape(t.spec(), tp_size), "%s: attribute 'local_shape' is %s, expected %s",
                   where.c_str(), shape_str(ls).c_str(),
                   shape_str(nn::local_shape(t.spec(), tp_size)).c_str());
      const int64_t b = get_i64(ds.get(), "local_begin", where), e = get_i64(ds.get(), "local_end", where);
      const int64_t n_local = static_cast<int64_t>(t.local_numel(tp_size));
      CHORUS_CHECK(0 <= b && b < e && e <= n_local,
                   "%s: slice [%lld, %lld) is outside the shard's %lld elements", where.c_str(),
                   static_cast<long long>(b), static_cast<long long>(e), static_cast<long long>(n_local));
      if (k == 0) {
        piece.begin = static_cast<size_t>(b);
        piece.end = static_cast<size_t>(e);
      } else {
        CHORUS_CHECK(piece.begin == static_cast<size_t>(b) && piece.end == static_cast<size_t>(e),
                     "%s: slice [%lld, %lld) differs from exp_avg's [%zu, %zu)", where.c_str(),
                     static_cast<long long>(b), static_cast<long long>(e), piece.begin, piece.end);
      }
      const auto shape = dataset_shape(ds.get(), where);
      CHORUS_CHECK(shape.size() == 1 && shape[0] == e - b, "%s: shape %s, expected (%lld)", where.c_str(),
                   shape_str(shape).c_str(), static_cast<long long>(e - b));
      bufs[k]->resize(static_cast<size_t>(e - b));
      read_all(ds.get(), bufs[k]->data(), where);
    }
    piece.exp_avg = bm.data();
    piece.exp_avg_sq = bv.data();
    total += piece.end - piece.begin;
    fn(piece);
  }
  CHORUS_CHECK(total == rec.flat_end - rec.flat_begin,
               "%s: its tensors hold %llu elements, expected flat_end - flat_begin = %llu (missing tensor)",
               fwhere.c_str(), static_cast<unsigned long long>(total),
               static_cast<unsigned long long>(rec.flat_end - rec.flat_begin));
}

}  // namespace chorus::checkpoint
