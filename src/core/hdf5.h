// Small RAII wrappers over the HDF5 C API and checked helpers for the few
// things Chorus stores: 1-D numeric datasets and scalar integer / string
// attributes. Every failure throws chorus::Error naming the file, the dataset or
// attribute, and what was expected; HDF5's own error-stack printing is switched
// off so users see only that message (HDF5's innermost error text is appended
// to it where it helps, e.g. "truncated file").
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace chorus::h5 {

// Turns off HDF5's automatic error printing for the calling thread (the
// library is built thread-safe, so the setting is per thread). Idempotent.
void quiet_errors();
// The innermost message of the calling thread's HDF5 error stack, or "" if the
// stack is empty (e.g. "truncated file: eof = 1024, ..., stored_eof = 2048").
std::string last_error();

// Owns one HDF5 identifier and releases it with `Close` in the destructor.
// Move-only.
template <herr_t (*Close)(hid_t)>
class Id {
 public:
  Id() = default;
  explicit Id(hid_t id) : id_(id) {}
  ~Id() { reset(); }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0) Close(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

using DatasetId = Id<H5Dclose>;
using SpaceId = Id<H5Sclose>;
using AttrId = Id<H5Aclose>;
using TypeId = Id<H5Tclose>;
using PlistId = Id<H5Pclose>;

// An open HDF5 file together with its path (for error messages).
class File {
 public:
  // Creates (truncating) a file for writing.
  static File create(const std::string& path);
  // Opens an existing file read-only. Checks that it exists and is HDF5
  // (H5Fis_hdf5) first; a truncated or corrupt file gives a message saying so.
  static File open_read(const std::string& path);

  File() = default;
  ~File();  // closes quietly; call close() to see errors
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  File(File&& o) noexcept;
  File& operator=(File&& o) noexcept;

  hid_t get() const { return id_; }
  const std::string& path() const { return path_; }
  void flush();  // H5Fflush, checked
  void close();  // H5Fclose, checked; the File is empty afterwards

 private:
  File(hid_t id, std::string path) : id_(id), path_(std::move(path)) {}
  hid_t id_ = H5I_INVALID_HID;
  std::string path_;
};

// The native (memory) HDF5 type of T, e.g. H5T_NATIVE_UINT32 for uint32_t.
template <class T>
hid_t native_type() {
  if constexpr (std::is_same_v<T, uint8_t>)
    return H5T_NATIVE_UINT8;
  else if constexpr (std::is_same_v<T, uint16_t>)
    return H5T_NATIVE_UINT16;
  else if constexpr (std::is_same_v<T, uint32_t>)
    return H5T_NATIVE_UINT32;
  else if constexpr (std::is_same_v<T, uint64_t>)
    return H5T_NATIVE_UINT64;
  else if constexpr (std::is_same_v<T, int8_t>)
    return H5T_NATIVE_INT8;
  else if constexpr (std::is_same_v<T, int16_t>)
    return H5T_NATIVE_INT16;
  else if constexpr (std::is_same_v<T, int32_t>)
    return H5T_NATIVE_INT32;
  else if constexpr (std::is_same_v<T, int64_t>)
    return H5T_NATIVE_INT64;
  else if constexpr (std::is_same_v<T, float>)
    return H5T_NATIVE_FLOAT;
  else if constexpr (std::is_same_v<T, double>)
    return H5T_NATIVE_DOUBLE;
  else
    static_assert(sizeof(T) == 0, "no native HDF5 type for T");
}

// What a 1-D dataset holds: its length and stored element type.
struct Dataset1dInfo {
  uint64_t n = 0;
  H5T_class_t type_class = H5T_NO_CLASS;  // H5T_INTEGER, H5T_FLOAT, ...
  size_t type_bytes = 0;                  // element size in the file
  bool is_signed = false;                 // integers only
  std::string type_name() const;          // "uint16", "int64", "float32", ...
};

bool has_dataset(const File& f, const std::string& name);
// Throws if the dataset is missing or not 1-D.
Dataset1dInfo inspect_1d(const File& f, const std::string& name);
// Reads all n elements of a 1-D dataset, converting to mem_type. Throws if the
// dataset is missing, not 1-D, or its length is not n.
void read_1d(const File& f, const std::string& name, hid_t mem_type, void* out, uint64_t n);
template <class T>
std::vector<T> read_1d(const File& f, const std::string& name) {
  const Dataset1dInfo info = inspect_1d(f, name);
  std::vector<T> out(info.n);
  read_1d(f, name, native_type<T>(), out.data(), info.n);
  return out;
}
// Creates a contiguous 1-D dataset of n elements stored as file_type (e.g.
// H5T_STD_U16LE) and writes `data` (mem_type elements) into it.
void write_1d(File& f, const std::string& name, hid_t file_type, hid_t mem_type, const void* data,
              uint64_t n);
template <class T>
void write_1d(File& f, const std::string& name, hid_t file_type, const std::vector<T>& data) {
  write_1d(f, name, file_type, native_type<T>(), data.data(), data.size());
}

// Attributes of the root group. The readers check that the attribute exists,
// is scalar and has the right class (integer / string); read_attr_uint also
// refuses a negative stored value and read_attr_int one above INT64_MAX.
bool has_attr(const File& f, const std::string& name);
void write_attr_string(File& f, const std::string& name, const std::string& value);
void write_attr_int(File& f, const std::string& name, int64_t value, hid_t file_type = H5T_STD_I64LE);
void write_attr_uint(File& f, const std::string& name, uint64_t value, hid_t file_type = H5T_STD_U64LE);
std::string read_attr_string(const File& f, const std::string& name);
int64_t read_attr_int(const File& f, const std::string& name);
uint64_t read_attr_uint(const File& f, const std::string& name);

}  // namespace chorus::h5
