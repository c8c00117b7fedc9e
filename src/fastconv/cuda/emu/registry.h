// The kernel table of one emulated module. The build (fastconv/backends/cupy/_emu.py) compiles,
// for each ../<family>.cu, a translation unit that includes the .cu file and then lists the name
// expressions the Python adapter launches, the same strings NVRTC gets on a GPU:
//
//     #include "conv.cu"
//     #include "emu/registry.h"
//     FC_EMU_TABLE(FC_EMU_KERNEL(im2col<float>), FC_EMU_KERNEL(im2col<double>), ...)
//
// Each entry knows its parameter types, so a launch whose arguments do not match the kernel's
// signature (a float64 array for a `const float*`, an int64 for an `int`, a read-only array for a
// written pointer) is an error here, where on a GPU it would silently read garbage.
#pragma once

#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

namespace fc_emu {

// What each parameter is: "f4" a float scalar, "&f4" a const float*, "*f4" a float* it writes.
// The codes are NumPy's (kind, itemsize), so the Python side spells an argument the same way.
template <typename T, typename = void>
struct Code;
template <> struct Code<float> { static constexpr const char* value = "f4"; };
template <> struct Code<double> { static constexpr const char* value = "f8"; };
template <> struct Code<__half> { static constexpr const char* value = "f2"; };
template <> struct Code<bool> { static constexpr const char* value = "b1"; };
template <> struct Code<signed char> { static constexpr const char* value = "i1"; };
template <> struct Code<unsigned char> { static constexpr const char* value = "u1"; };
template <> struct Code<short> { static constexpr const char* value = "i2"; };
template <> struct Code<unsigned short> { static constexpr const char* value = "u2"; };
template <> struct Code<int> { static constexpr const char* value = "i4"; };
template <> struct Code<unsigned> { static constexpr const char* value = "u4"; };
template <> struct Code<long> { static constexpr const char* value = "i8"; };
template <> struct Code<unsigned long> { static constexpr const char* value = "u8"; };
template <> struct Code<long long> { static constexpr const char* value = "i8"; };
template <> struct Code<unsigned long long> { static constexpr const char* value = "u8"; };

template <typename T>
struct Param {
    static const char* code() { return Code<std::remove_cv_t<T>>::value; }
};
template <typename T>
struct Param<T*> {
    static const char* code() {
        static const std::string s = std::string(std::is_const<T>::value ? "&" : "*") +
                                     Code<std::remove_cv_t<T>>::value;
        return s.c_str();
    }
};

struct Entry {
    const char* name;
    void (*invoke)(void** args);  // args[i] points at the value of parameter i
    int nparams;
    const char* const* params;  // nparams codes
};

template <auto F>
struct Kernel;
template <typename... A, void (*F)(A...)>
struct Kernel<F> {
    template <std::size_t... I>
    static void call(void** args, std::index_sequence<I...>) {
        F(*static_cast<std::remove_reference_t<A>*>(args[I])...);
    }
    static void invoke(void** args) { call(args, std::index_sequence_for<A...>{}); }
    static Entry entry(const char* name) {
        static const char* codes[] = {Param<A>::code()..., nullptr};
        return Entry{name, &invoke, int(sizeof...(A)), codes};
    }
};

}  // namespace fc_emu

#define FC_EMU_KERNEL(...) ::fc_emu::Kernel<&__VA_ARGS__>::entry(#__VA_ARGS__)
#define FC_EMU_TABLE(...)                                                     \
    static const ::fc_emu::Entry fc_emu_table_[] = {__VA_ARGS__};             \
    extern "C" const ::fc_emu::Entry* fc_emu_table(int* count) {              \
        *count = int(sizeof(fc_emu_table_) / sizeof(fc_emu_table_[0]));       \
        return fc_emu_table_;                                                 \
    }
