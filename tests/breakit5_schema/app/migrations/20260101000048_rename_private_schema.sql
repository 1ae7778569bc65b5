alter schema private rename to internal;
