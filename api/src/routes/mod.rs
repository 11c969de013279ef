pub mod agents;
pub mod health;
pub mod tools;
