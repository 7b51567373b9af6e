#include "exectemplate.h"
