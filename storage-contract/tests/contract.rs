//! The storage contract on every backend and on both profiles of the model.

use stowage_storage_contract::{Model, RealStore, S3Server, run};

#[tokio::test]
async fn the_model_as_s3() {
    run("the model (as S3)", async |_| Model::as_s3()).await;
}

#[tokio::test]
async fn the_model_as_the_filesystem() {
    run("the model (as the filesystem)", async |_| Model::as_fs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filesystem() {
    run("the filesystem backend", async |case| RealStore::fs(case)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_on_moto() {
    let moto = S3Server::moto();
    run("the S3 backend on moto", async |case| {
        RealStore::s3(moto.endpoint(), case).await
    })
    .await;
}
