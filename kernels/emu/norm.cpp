/* norm.cu compiled for the host emulator (see emu.hpp). */
#include "../norm.cu"
