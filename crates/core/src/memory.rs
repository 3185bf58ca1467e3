//! An in-memory [`Store`]: for tests and for trying things out; nothing survives a restart.

use crate::clock::{Clock, SystemClock};
use crate::model::{Offset, Owner, UploadId, UploadInfo, UploadStatus};
use crate::store::{
    Appended, BodyStream, ByteStream, Capabilities, Staged, Store, StoreError, client_key_digest,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

struct Upload {
    info: Option<UploadInfo>,
    bytes: BytesMut,
    /// What `stage` set aside.
    staged: BytesMut,
    modified_at: SystemTime,
}

/// Uploads held in memory.
pub struct MemoryStore {
    /// A std mutex: held only for map look-ups and copies, never across an await. Ordered, so
    /// that `list` pages by a range.
    uploads: Mutex<BTreeMap<UploadId, Arc<Mutex<Upload>>>>,
    keys: Mutex<HashMap<String, UploadId>>,
    /// The time recorded as an upload's last write.
    clock: Arc<dyn Clock>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_clock(Arc::new(SystemClock))
    }
}

impl MemoryStore {
    /// A store whose write times come from `clock` (the service's, so expiry agrees).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            uploads: Mutex::default(),
            keys: Mutex::default(),
            clock,
        }
    }

    fn upload(&self, id: &UploadId) -> Result<Arc<Mutex<Upload>>, StoreError> {
        let uploads = self
            .uploads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        uploads.get(id).cloned().ok_or(StoreError::NotFound)
    }
}

fn lock(upload: &Mutex<Upload>) -> std::sync::MutexGuard<'_, Upload> {
    upload.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            terminate: true,
            read: true,
            stage: true,
            concatenate: true,
            list: true,
            client_keys: true,
        }
    }

    async fn create(&self, info: &UploadInfo) -> Result<(), StoreError> {
        let upload = Upload {
            info: Some(info.clone()),
            bytes: BytesMut::new(),
            staged: BytesMut::new(),
            modified_at: self.clock.now(),
        };
        self.uploads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(info.id.clone(), Arc::new(Mutex::new(upload)));
        if let Some(key) = &info.client_key {
            self.keys
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .insert(client_key_digest(&info.owner, key), info.id.clone());
        }
        Ok(())
    }

    async fn status(&self, id: &UploadId) -> Result<UploadStatus, StoreError> {
        let upload = self.upload(id)?;
        let upload = lock(&upload);
        let info = upload.info.clone().ok_or(StoreError::NotFound)?;
        Ok(UploadStatus {
            info,
            offset: Offset(upload.bytes.len() as u64),
            modified_at: upload.modified_at,
        })
    }

    async fn append(
        &self,
        id: &UploadId,
        offset: Offset,
        mut body: BodyStream,
    ) -> Result<Appended, StoreError> {
        let upload = self.upload(id)?;
        let stored = Offset(lock(&upload).bytes.len() as u64);
        if stored != offset {
            return Err(StoreError::OffsetMismatch { stored });
        }
        let mut interruption = None;
        let mut modified_at = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    let mut upload = lock(&upload);
                    upload.bytes.extend_from_slice(&chunk);
                    let now = self.clock.now();
                    upload.modified_at = now;
                    modified_at = Some(now);
                }
                Err(error) => {
                    interruption = Some(error);
                    break;
                }
            }
        }
        let offset = Offset(lock(&upload).bytes.len() as u64);
        Ok(Appended {
            offset,
            interruption,
            modified_at,
        })
    }

    async fn update(&self, info: &UploadInfo) -> Result<(), StoreError> {
        let upload = self.upload(&info.id)?;
        lock(&upload).info = Some(info.clone());
        Ok(())
    }

    async fn finish(&self, id: &UploadId) -> Result<(), StoreError> {
        self.upload(id).map(|_| ())
    }

    async fn terminate(&self, id: &UploadId) -> Result<(), StoreError> {
        let removed = self
            .uploads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .remove(id)
            .ok_or(StoreError::NotFound)?;
        if let Some(info) = lock(&removed).info.take()
            && let Some(key) = &info.client_key
        {
            self.keys
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .remove(&client_key_digest(&info.owner, key));
        }
        Ok(())
    }

    async fn read(&self, id: &UploadId, range: Range<u64>) -> Result<ByteStream, StoreError> {
        let upload = self.upload(id)?;
        let bytes = lock(&upload).bytes.clone().freeze();
        let start = usize::try_from(range.start)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = usize::try_from(range.end)
            .unwrap_or(usize::MAX)
            .min(bytes.len())
            .max(start);
        let slice: Bytes = bytes.slice(start..end);
        Ok(futures_util::stream::once(async move { Ok(slice) }).boxed())
    }

    async fn find_by_key(
        &self,
        owner: &Owner,
        client_key: &str,
    ) -> Result<Option<UploadId>, StoreError> {
        let keys = self
            .keys
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        Ok(keys.get(&client_key_digest(owner, client_key)).cloned())
    }

    async fn stage(
        &self,
        id: &UploadId,
        offset: Offset,
        mut body: BodyStream,
    ) -> Result<Staged, StoreError> {
        let upload = self.upload(id)?;
        {
            let mut upload = lock(&upload);
            let stored = Offset(upload.bytes.len() as u64);
            if stored != offset {
                return Err(StoreError::OffsetMismatch { stored });
            }
            upload.staged.clear();
        }
        let mut interruption = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => lock(&upload).staged.extend_from_slice(&chunk),
                Err(error) => {
                    interruption = Some(error);
                    break;
                }
            }
        }
        let length = lock(&upload).staged.len() as u64;
        Ok(Staged {
            length,
            interruption,
        })
    }

    async fn commit_staged(&self, id: &UploadId, offset: Offset) -> Result<Offset, StoreError> {
        let upload = self.upload(id)?;
        let mut upload = lock(&upload);
        let stored = Offset(upload.bytes.len() as u64);
        if stored != offset {
            return Err(StoreError::OffsetMismatch { stored });
        }
        let staged = std::mem::take(&mut upload.staged);
        upload.bytes.extend_from_slice(&staged);
        upload.modified_at = self.clock.now();
        Ok(Offset(upload.bytes.len() as u64))
    }

    async fn discard_staged(&self, id: &UploadId) -> Result<(), StoreError> {
        let upload = self.upload(id)?;
        lock(&upload).staged.clear();
        Ok(())
    }

    async fn concatenate(&self, target: &UploadId, parts: &[UploadId]) -> Result<(), StoreError> {
        let mut bytes = BytesMut::new();
        for part in parts {
            let part = self.upload(part)?;
            bytes.extend_from_slice(&lock(&part).bytes);
        }
        let target = self.upload(target)?;
        let mut target = lock(&target);
        target.bytes = bytes;
        target.modified_at = self.clock.now();
        Ok(())
    }

    async fn list(
        &self,
        start_after: Option<&UploadId>,
        limit: usize,
    ) -> Result<Vec<UploadId>, StoreError> {
        use std::ops::Bound;
        let uploads = self
            .uploads
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let from = start_after.map_or(Bound::Unbounded, Bound::Excluded);
        let page = uploads.range::<UploadId, _>((from, Bound::Unbounded));
        Ok(page.take(limit).map(|(id, _)| id.clone()).collect())
    }
}
