/* scoring.cu compiled for the host emulator (see emu.hpp). */
#include "../scoring.cu"
