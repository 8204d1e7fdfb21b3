#include "core/hdf5.h"

#include <cstdint>
#include <filesystem>
#include <limits>

#include "core/error.h"

namespace chorus::h5 {

namespace {

// " (HDF5: <innermost message>)" or "" when HDF5 recorded nothing.
std::string hdf5_says() {
  std::string e = last_error();
  return e.empty() ? std::string() : " (HDF5: " + e + ")";
}

std::string type_desc(hid_t type) {
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return strfmt("%sint%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", 8 * H5Tget_size(type));
    case H5T_FLOAT:
      return strfmt("float%zu", 8 * H5Tget_size(type));
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    case H5T_ARRAY:
      return "array";
    case H5T_VLEN:
      return "vlen";
    case H5T_OPAQUE:
      return "opaque";
    default:
      return "other";
  }
}

DatasetId open_dataset(const File& f, const std::string& name) {
  quiet_errors();
  CHORUS_CHECK(f.get() >= 0, "HDF5 file %s: not open (reading dataset '%s')", f.path().c_str(), name.c_str());
  const htri_t exists = H5Lexists(f.get(), name.c_str(), H5P_DEFAULT);
  CHORUS_CHECK(exists >= 0, "%s: cannot look up dataset '%s' (corrupt file?)%s", f.path().c_str(),
               name.c_str(), hdf5_says().c_str());
  CHORUS_CHECK(exists > 0 && has_dataset(f, name),
               "%s: dataset '%s' is missing (expected a 1-D dataset of that name)", f.path().c_str(),
               name.c_str());
  DatasetId ds(H5Dopen2(f.get(), name.c_str(), H5P_DEFAULT));
  CHORUS_CHECK(ds.valid(), "%s: cannot open dataset '%s'%s", f.path().c_str(), name.c_str(),
               hdf5_says().c_str());
  return ds;
}

// Dimensions of a dataset's dataspace, checked to be 1-D.
uint64_t extent_1d(const File& f, const std::string& name, hid_t ds) {
  SpaceId space(H5Dget_space(ds));
  CHORUS_CHECK(space.valid(), "%s: dataset '%s': cannot read its dataspace%s", f.path().c_str(), name.c_str(),
               hdf5_says().c_str());
  int rank = H5Sget_simple_extent_ndims(space.get());
  CHORUS_CHECK(rank == 1, "%s: dataset '%s': expected 1-D, found %d dimensions", f.path().c_str(),
               name.c_str(), rank);
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  return dims[0];
}

AttrId open_scalar_attr(const File& f, const std::string& name, H5T_class_t want, const char* want_desc,
                        TypeId* type_out) {
  quiet_errors();
  CHORUS_CHECK(f.get() >= 0, "HDF5 file %s: not open (reading attribute '%s')", f.path().c_str(),
               name.c_str());
  const htri_t exists = H5Aexists(f.get(), name.c_str());
  CHORUS_CHECK(exists >= 0, "%s: cannot look up root attribute '%s' (corrupt file?)%s", f.path().c_str(),
               name.c_str(), hdf5_says().c_str());
  CHORUS_CHECK(exists > 0, "%s: root attribute '%s' is missing (expected %s)", f.path().c_str(), name.c_str(),
               want_desc);
  AttrId attr(H5Aopen(f.get(), name.c_str(), H5P_DEFAULT));
  CHORUS_CHECK(attr.valid(), "%s: cannot open root attribute '%s'%s", f.path().c_str(), name.c_str(),
               hdf5_says().c_str());
  TypeId type(H5Aget_type(attr.get()));
  CHORUS_CHECK(type.valid(), "%s: attribute '%s': cannot read its type%s", f.path().c_str(), name.c_str(),
               hdf5_says().c_str());
  CHORUS_CHECK(H5Tget_class(type.get()) == want, "%s: attribute '%s': expected %s, found %s",
               f.path().c_str(), name.c_str(), want_desc, type_desc(type.get()).c_str());
  SpaceId space(H5Aget_space(attr.get()));
  CHORUS_CHECK(space.valid(), "%s: attribute '%s': cannot read its dataspace%s", f.path().c_str(),
               name.c_str(), hdf5_says().c_str());
  hssize_t n = H5Sget_simple_extent_npoints(space.get());
  CHORUS_CHECK(n == 1, "%s: attribute '%s': expected a single value, found %lld", f.path().c_str(),
               name.c_str(), static_cast<long long>(n));
  *type_out = std::move(type);
  return attr;
}

void write_attr(File& f, const std::string& name, hid_t file_type, hid_t mem_type, const void* value) {
  quiet_errors();
  SpaceId space(H5Screate(H5S_SCALAR));
  CHORUS_CHECK(space.valid(), "%s: attribute '%s': cannot create a scalar dataspace%s", f.path().c_str(),
               name.c_str(), hdf5_says().c_str());
  if (has_attr(f, name)) H5Adelete(f.get(), name.c_str());
  AttrId attr(H5Acreate2(f.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  CHORUS_CHECK(attr.valid(), "%s: cannot create root attribute '%s'%s", f.path().c_str(), name.c_str(),
               hdf5_says().c_str());
  CHORUS_CHECK(H5Awrite(attr.get(), mem_type, value) >= 0, "%s: cannot write root attribute '%s'%s",
               f.path().c_str(), name.c_str(), hdf5_says().c_str());
}

}  // namespace

void quiet_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string last_error() {
  struct Found {
    std::string msg;
  } found;
  // Walking upward starts at the innermost (most specific) error, index 0.
  auto cb = [](unsigned n, const H5E_error2_t* err, void* data) -> herr_t {
    auto* fd = static_cast<Found*>(data);
    if (n == 0 && err) {
      if (err->desc && err->desc[0]) {
        fd->msg = err->desc;
      } else {
        char buf[256] = {0};
        H5E_type_t t;
        if (H5Eget_msg(err->min_num, &t, buf, sizeof buf) > 0) fd->msg = buf;
      }
    }
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, cb, &found);
  return found.msg;
}

// ---- File ------------------------------------------------------------------------

static PlistId file_access_plist() {
  PlistId fapl(H5Pcreate(H5P_FILE_ACCESS));
#if H5_VERSION_GE(1, 10, 7)
  // Keep HDF5's file locks, but do not fail on file systems where locking is
  // disabled (common on cluster file systems).
  if (fapl.valid()) H5Pset_file_locking(fapl.get(), true, true);
#endif
  return fapl;
}

File File::create(const std::string& path) {
  quiet_errors();
  PlistId fapl = file_access_plist();
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.valid() ? fapl.get() : H5P_DEFAULT);
  CHORUS_CHECK(id >= 0, "%s: cannot create HDF5 file%s", path.c_str(), hdf5_says().c_str());
  return File(id, path);
}

File File::open_read(const std::string& path) {
  quiet_errors();
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  CHORUS_CHECK(std::filesystem::exists(st), "%s: file not found", path.c_str());
  CHORUS_CHECK(std::filesystem::is_regular_file(st), "%s: not a regular file", path.c_str());
  htri_t is = H5Fis_hdf5(path.c_str());
  CHORUS_CHECK(is >= 0, "%s: cannot read the file to check for an HDF5 signature%s", path.c_str(),
               hdf5_says().c_str());
  CHORUS_CHECK(is > 0, "%s: not an HDF5 file (no HDF5 signature found)", path.c_str());
  PlistId fapl = file_access_plist();
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.valid() ? fapl.get() : H5P_DEFAULT);
  CHORUS_CHECK(id >= 0, "%s: cannot open HDF5 file: truncated or corrupt%s", path.c_str(),
               hdf5_says().c_str());
  return File(id, path);
}

File::~File() {
  if (id_ >= 0) H5Fclose(id_);
}

File::File(File&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), path_(std::move(o.path_)) {}

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = std::exchange(o.id_, H5I_INVALID_HID);
    path_ = std::move(o.path_);
  }
  return *this;
}

void File::flush() {
  quiet_errors();
  CHORUS_CHECK(id_ >= 0, "HDF5 file %s: flush of a file that is not open", path_.c_str());
  CHORUS_CHECK(H5Fflush(id_, H5F_SCOPE_GLOBAL) >= 0, "%s: cannot flush HDF5 file%s", path_.c_str(),
               hdf5_says().c_str());
}

void File::close() {
  quiet_errors();
  if (id_ < 0) return;
  herr_t r = H5Fclose(std::exchange(id_, H5I_INVALID_HID));
  CHORUS_CHECK(r >= 0, "%s: cannot close HDF5 file%s", path_.c_str(), hdf5_says().c_str());
}

// ---- datasets ----------------------------------------------------------------------

std::string Dataset1dInfo::type_name() const {
  switch (type_class) {
    case H5T_INTEGER:
      return strfmt("%sint%zu", is_signed ? "" : "u", 8 * type_bytes);
    case H5T_FLOAT:
      return strfmt("float%zu", 8 * type_bytes);
    case H5T_STRING:
      return "string";
    default:
      return "non-numeric";
  }
}

bool has_dataset(const File& f, const std::string& name) {
  quiet_errors();
  if (H5Lexists(f.get(), name.c_str(), H5P_DEFAULT) <= 0) return false;
  H5O_info_t info;
  if (H5Oget_info_by_name(f.get(), name.c_str(), &info, H5P_DEFAULT) < 0) return false;
  return info.type == H5O_TYPE_DATASET;
}

Dataset1dInfo inspect_1d(const File& f, const std::string& name) {
  DatasetId ds = open_dataset(f, name);
  Dataset1dInfo info;
  info.n = extent_1d(f, name, ds.get());
  TypeId type(H5Dget_type(ds.get()));
  CHORUS_CHECK(type.valid(), "%s: dataset '%s': cannot read its type%s", f.path().c_str(), name.c_str(),
               hdf5_says().c_str());
  info.type_class = H5Tget_class(type.get());
  info.type_bytes = H5Tget_size(type.get());
  info.is_signed = info.type_class == H5T_INTEGER && H5Tget_sign(type.get()) != H5T_SGN_NONE;
  return info;
}

void read_1d(const File& f, const std::string& name, hid_t mem_type, void* out, uint64_t n) {
  DatasetId ds = open_dataset(f, name);
  uint64_t found = extent_1d(f, name, ds.get());
  CHORUS_CHECK(found == n, "%s: dataset '%s': expected %llu elements, found %llu", f.path().c_str(),
               name.c_str(), static_cast<unsigned long long>(n), static_cast<unsigned long long>(found));
  if (n == 0) return;
  CHORUS_CHECK(H5Dread(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0,
               "%s: cannot read dataset '%s' (truncated or corrupt file?)%s", f.path().c_str(), name.c_str(),
               hdf5_says().c_str());
}

void write_1d(File& f, const std::string& name, hid_t file_type, hid_t mem_type, const void* data,
              uint64_t n) {
  quiet_errors();
  hsize_t dims[1] = {n};
  SpaceId space(H5Screate_simple(1, dims, nullptr));
  CHORUS_CHECK(space.valid(), "%s: dataset '%s': cannot create a 1-D dataspace of %llu elements%s",
               f.path().c_str(), name.c_str(), static_cast<unsigned long long>(n), hdf5_says().c_str());
  DatasetId ds(
      H5Dcreate2(f.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  CHORUS_CHECK(ds.valid(), "%s: cannot create dataset '%s'%s", f.path().c_str(), name.c_str(),
               hdf5_says().c_str());
  if (n == 0) return;
  CHORUS_CHECK(H5Dwrite(ds.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0,
               "%s: cannot write dataset '%s'%s", f.path().c_str(), name.c_str(), hdf5_says().c_str());
}

// ---- attributes ----------------------------------------------------------------------

bool has_attr(const File& f, const std::string& name) {
  quiet_errors();
  return H5Aexists(f.get(), name.c_str()) > 0;
}

void write_attr_string(File& f, const std::string& name, const std::string& value) {
  quiet_errors();
  // Fixed-length, NUL-terminated UTF-8 (h5py reads it as bytes / str).
  TypeId type(H5Tcopy(H5T_C_S1));
  CHORUS_CHECK(type.valid() && H5Tset_size(type.get(), value.size() + 1) >= 0 &&
                   H5Tset_strpad(type.get(), H5T_STR_NULLTERM) >= 0 &&
                   H5Tset_cset(type.get(), H5T_CSET_UTF8) >= 0,
               "%s: attribute '%s': cannot build a string type of %zu bytes%s", f.path().c_str(),
               name.c_str(), value.size() + 1, hdf5_says().c_str());
  write_attr(f, name, type.get(), type.get(), value.c_str());
}

void write_attr_int(File& f, const std::string& name, int64_t value, hid_t file_type) {
  write_attr(f, name, file_type, H5T_NATIVE_INT64, &value);
}

void write_attr_uint(File& f, const std::string& name, uint64_t value, hid_t file_type) {
  write_attr(f, name, file_type, H5T_NATIVE_UINT64, &value);
}

std::string read_attr_string(const File& f, const std::string& name) {
  TypeId type;
  AttrId attr = open_scalar_attr(f, name, H5T_STRING, "a string", &type);
  htri_t is_var = H5Tis_variable_str(type.get());
  CHORUS_CHECK(is_var >= 0, "%s: attribute '%s': cannot inspect its string type%s", f.path().c_str(),
               name.c_str(), hdf5_says().c_str());
  if (is_var > 0) {
    TypeId mem(H5Tcopy(H5T_C_S1));
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* p = nullptr;
    CHORUS_CHECK(H5Aread(attr.get(), mem.get(), &p) >= 0, "%s: cannot read string attribute '%s'%s",
                 f.path().c_str(), name.c_str(), hdf5_says().c_str());
    std::string out = p ? p : "";
    if (p) H5free_memory(p);
    return out;
  }
  size_t size = H5Tget_size(type.get());
  std::string buf(size, '\0');
  TypeId mem(H5Tcopy(type.get()));
  CHORUS_CHECK(H5Aread(attr.get(), mem.get(), buf.data()) >= 0, "%s: cannot read string attribute '%s'%s",
               f.path().c_str(), name.c_str(), hdf5_says().c_str());
  size_t end = buf.find('\0');
  if (end != std::string::npos) buf.resize(end);
  if (H5Tget_strpad(type.get()) == H5T_STR_SPACEPAD) {
    while (!buf.empty() && buf.back() == ' ') buf.pop_back();
  }
  return buf;
}

int64_t read_attr_int(const File& f, const std::string& name) {
  TypeId type;
  AttrId attr = open_scalar_attr(f, name, H5T_INTEGER, "an integer", &type);
  if (H5Tget_sign(type.get()) == H5T_SGN_NONE) {
    uint64_t v = 0;
    CHORUS_CHECK(H5Aread(attr.get(), H5T_NATIVE_UINT64, &v) >= 0, "%s: cannot read integer attribute '%s'%s",
                 f.path().c_str(), name.c_str(), hdf5_says().c_str());
    CHORUS_CHECK(v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                 "%s: attribute '%s': expected a value <= INT64_MAX, found %llu", f.path().c_str(),
                 name.c_str(), static_cast<unsigned long long>(v));
    return static_cast<int64_t>(v);
  }
  int64_t v = 0;
  CHORUS_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &v) >= 0, "%s: cannot read integer attribute '%s'%s",
               f.path().c_str(), name.c_str(), hdf5_says().c_str());
  return v;
}

uint64_t read_attr_uint(const File& f, const std::string& name) {
  TypeId type;
  AttrId attr = open_scalar_attr(f, name, H5T_INTEGER, "a non-negative integer", &type);
  if (H5Tget_sign(type.get()) != H5T_SGN_NONE) {
    int64_t v = 0;
    CHORUS_CHECK(H5Aread(attr.get(), H5T_NATIVE_INT64, &v) >= 0, "%s: cannot read integer attribute '%s'%s",
                 f.path().c_str(), name.c_str(), hdf5_says().c_str());
    CHORUS_CHECK(v >= 0, "%s: attribute '%s': expected a non-negative integer, found %lld", f.path().c_str(),
                 name.c_str(), static_cast<long long>(v));
    return static_cast<uint64_t>(v);
  }
  uint64_t v = 0;
  CHORUS_CHECK(H5Aread(attr.get(), H5T_NATIVE_UINT64, &v) >= 0, "%s: cannot read integer attribute '%s'%s",
               f.path().c_str(), name.c_str(), hdf5_says().c_str());
  return v;
}

}  // namespace chorus::h5
