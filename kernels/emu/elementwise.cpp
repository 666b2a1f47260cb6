/* elementwise.cu compiled for the host emulator (see emu.hpp). */
#include "../elementwise.cu"
