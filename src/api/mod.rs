//! The authenticated REST API: parsing, validation and error mapping only;
//! every effect goes through orchestration.
