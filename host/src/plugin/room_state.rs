//! The `room-state` import: read access to rooms, seats, calls and
//! presence, straight from the state store.

use super::bindings::chorus::plugin::room_state::{Attributes, Call, Host, Membership, Seat};
use super::grants::Import;
use super::view::PluginView;

impl Host for PluginView {
    async fn membership_of(&mut self, user_id: u64) -> wasmtime::Result<Option<Membership>> {
        self.require(Import::RoomState)?;
        self.awaiting_store = true;
        let found = self.store.membership_of(user_id).await;
        self.awaiting_store = false;
        let membership = found.map_err(|e| self.store_failed(e))?;
        Ok(membership.map(|m| Membership {
            channel_name: m.channel_name,
            room_id: m.room_id,
            seat_id: m.seat_id,
        }))
    }

    async fn room_members(&mut self, channel_name: String) -> wasmtime::Result<Vec<u64>> {
        self.require(Import::RoomState)?;
        self.awaiting_store = true;
        let found = self.store.room_members(&channel_name).await;
        self.awaiting_store = false;
        found.map_err(|e| self.store_failed(e))
    }

    async fn room_seats(&mut self, channel_name: String) -> wasmtime::Result<Vec<Seat>> {
        self.require(Import::RoomState)?;
        self.awaiting_store = true;
        let found = self.store.room_seats(&channel_name).await;
        self.awaiting_store = false;
        let seats = found.map_err(|e| self.store_failed(e))?;
        Ok(seats
            .into_iter()
            .map(|s| Seat {
                id: s.id,
                user_id: s.user_id,
                status: s.status,
                microphone: s.microphone,
            })
            .collect())
    }

    async fn call_of(&mut self, user_id: u64) -> wasmtime::Result<Option<Call>> {
        self.require(Import::RoomState)?;
        self.awaiting_store = true;
        let found = self.store.call_of(user_id).await;
        self.awaiting_store = false;
        let call = found.map_err(|e| self.store_failed(e))?;
        Ok(call.map(|c| Call {
            peer_id: c.peer_id,
            channel_name: c.channel_name,
        }))
    }

    async fn is_online(&mut self, user_id: u64) -> wasmtime::Result<bool> {
        self.require(Import::RoomState)?;
        self.awaiting_store = true;
        let found = self.store.node_of(user_id).await;
        self.awaiting_store = false;
        Ok(found.map_err(|e| self.store_failed(e))?.is_some())
    }

    async fn room_attributes(&mut self, channel_name: String) -> wasmtime::Result<Attributes> {
        self.require(Import::RoomState)?;
        self.awaiting_store = true;
        let found = self.store.room_attrs(&channel_name).await;
        self.awaiting_store = false;
        let attrs = found.map_err(|e| self.store_failed(e))?;
        Ok(Attributes {
            version: attrs.version,
            entries: attrs.entries,
        })
    }
}
