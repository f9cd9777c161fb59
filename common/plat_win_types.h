/* Force-included (-include) into every file of the Windows build: the POSIX
 * types that plat.h's interface uses and mingw-w64 does not define. */
#ifndef MUXSHIM_PLAT_WIN_TYPES_H
#define MUXSHIM_PLAT_WIN_TYPES_H

typedef unsigned int uid_t;

#endif
