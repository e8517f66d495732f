//! (being ported: see issue 7)
