pub mod agents;
pub mod events;
pub mod health;
pub mod tools;
pub mod ui;
pub mod webhooks;
