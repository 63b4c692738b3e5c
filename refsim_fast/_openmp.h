/* OpenMP if the build has it, a serial stand-in otherwise (meson option `openmp`). */
#ifndef REFSIM_OPENMP_H
#define REFSIM_OPENMP_H
#ifdef _OPENMP
#include <omp.h>
#define REFSIM_OPENMP 1
#else
#define REFSIM_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
#endif
#endif
