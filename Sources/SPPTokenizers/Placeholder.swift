import SPPCore
