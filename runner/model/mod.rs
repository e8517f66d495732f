pub mod encodec;
