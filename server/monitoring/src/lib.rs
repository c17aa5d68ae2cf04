//! What ferroserve learns from the traffic it serves: the capture of
//! sampled requests and their answers to Parquet files ([`capture`]), for
//! people and for the drift statistics that compare production with the
//! training data ([`drift`]).
//!
//! This crate sits above the backends' interface and below the front ends:
//! it knows tensors and signatures, never sockets, HTTP or the registry's
//! storage. The front end hands it a finished request; nothing here runs on
//! the request's path except a sampling decision and a `try_send`.

pub mod capture;
pub mod drift;
