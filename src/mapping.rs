//! Names on top of the registry: service types, groups, export and import (filled in by the mapping work).
