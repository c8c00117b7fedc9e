// What every binding file checks before handing arrays to a kernel: dtype, C-contiguity, size and
// writability (never a silent copy or cast), the thread count, and the float/double dispatch.
// Shared by bindings.cpp and bindings_ops.cpp.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "common.h"

namespace fastconv {
namespace bind {

namespace py = pybind11;

// Whether a's dtype is T's: equivalent, not the same object (a dtype that travelled through pickle,
// as in a worker process, is an equal but distinct object).
template <typename T>
bool has_dtype(const py::array& a) {
  return py::isinstance<py::array_t<T>>(a);
}

// The array's data, after checking dtype, layout and size.
template <typename T>
const T* in(const char* op, const char* name, const py::array& a, index_t size) {
  if (!has_dtype<T>(a))
    throw py::type_error(std::string(op) + ": " + name + " has dtype " + std::string(py::str(a.dtype())) +
                         ", expected " + std::string(py::str(py::dtype::of<T>())));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(op) + ": " + name + " must be C-contiguous");
  if (a.size() != size)
    throw py::value_error(std::string(op) + ": " + name + " has " + std::to_string(a.size()) + " elements, expected " +
                          std::to_string(size));
  return static_cast<const T*>(a.data());
}

template <typename T>
T* out(const char* op, const char* name, py::array& a, index_t size) {
  in<T>(op, name, a, size);
  if (!a.writeable()) throw py::value_error(std::string(op) + ": " + name + " must be writable");
  return static_cast<T*>(a.mutable_data());
}

// None -> nullptr
template <typename T>
const T* in_opt(const char* op, const char* name, const py::object& a, index_t size) {
  return a.is_none() ? nullptr : in<T>(op, name, a.cast<py::array>(), size);
}

// None -> nullptr; anything but an array is rejected (a conversion would write into a copy)
template <typename T>
T* out_opt(const char* op, const char* name, const py::object& a, index_t size) {
  if (a.is_none()) return nullptr;
  if (!py::isinstance<py::array>(a)) throw py::type_error(std::string(op) + ": " + name + " must be an array or None");
  py::array arr = py::reinterpret_borrow<py::array>(a);
  return out<T>(op, name, arr, size);
}

// A params object's attribute names as interned Python strings, made once: pybind11's
// p.attr("name") builds a new str on every read, and the 16 reads of a conv or pool shape cost a
// tiny op ~3 us of its ~10 (issue 21: per-call overhead). The strings live as long as the process.
inline PyObject* interned(const char* name) {
  PyObject* s = PyUnicode_InternFromString(name);
  if (s == nullptr) throw py::error_already_set();
  return s;
}

// p.<name> as an integer (a Python int or bool), as p.attr(name).cast<index_t>() reads it.
inline index_t int_attr(const py::object& p, PyObject* name) {
  PyObject* v = PyObject_GetAttr(p.ptr(), name);
  if (v == nullptr) throw py::error_already_set();
  const long long r = PyLong_AsLongLong(v);
  Py_DECREF(v);
  if (r == -1 && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<index_t>(r);
}

inline int threads(int n) {
  if (n < 1) throw py::value_error("nthreads must be >= 1, got " + std::to_string(n));
  return n;
}

// Run f(float{}) or f(double{}) on the dtype of `a`; integer and other dtypes are a TypeError.
template <class F>
void by_dtype(const char* op, const py::array& a, F&& f) {
  if (has_dtype<float>(a)) return f(float{});
  if (has_dtype<double>(a)) return f(double{});
  throw py::type_error(std::string(op) + ": expected float32 or float64 arrays, got " + std::string(py::str(a.dtype())));
}

}  // namespace bind
}  // namespace fastconv
