/* attention.cu compiled for the host emulator (see emu.hpp). */
#include "../attention.cu"
