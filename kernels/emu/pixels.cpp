/* pixels.cu compiled for the host emulator (see emu.hpp). */
#include "../pixels.cu"
