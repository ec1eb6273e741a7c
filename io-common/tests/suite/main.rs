//! The adapter suite: every test is written once, generic over `aliot_io::Runtime`, and run on tokio
//! (`on_tokio::…`) and on smol (`on_smol::…`); then the two runtimes against each other
//! (`cross_runtime::…`).

mod broker_mqtt;
mod broker_rrpc;
mod broker_tls;
mod cross_runtime;
mod support;

use std::future::Future;

/// Runs a test's future to its end on tokio (a current-thread runtime, as `#[tokio::test]`).
fn run_on_tokio(test: impl Future<Output = ()>) {
    tokio_sync::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(test);
}

/// Runs a test's future to its end on smol (its tasks on smol's global executor).
fn run_on_smol(test: impl Future<Output = ()>) {
    smol::block_on(test);
}

/// For each `module { test, … }`, a `#[test]` per runtime calling `module::test::<R>()`.
macro_rules! on_both_runtimes {
    ($($module:ident { $($test:ident),* $(,)? })*) => {
        mod on_tokio {
            $(mod $module {
                $(#[test]
                fn $test() {
                    crate::run_on_tokio(crate::$module::$test::<aliot_tokio::Tokio>());
                })*
            })*
        }
        mod on_smol {
            $(mod $module {
                $(#[test]
                fn $test() {
                    crate::run_on_smol(crate::$module::$test::<aliot_smol::Smol>());
                })*
            })*
        }
    };
}

on_both_runtimes! {
    broker_mqtt {
        each_refusal_gets_its_connack_code_then_the_close,
        qos1_and_qos0_travel_end_to_end,
        a_kept_session_gets_what_arrived_while_offline_across_a_restart,
        a_second_connection_of_a_device_takes_over,
        the_acl_refuses_other_devices_topics,
        a_device_that_does_not_read_loses_qos0_and_slows_nobody,
        a_silent_connection_is_closed_at_the_connect_deadline,
        graceful_shutdown_closes_everyone_and_ends_pending_calls,
        start_names_the_address_it_cannot_bind,
    }
    broker_rrpc {
        rrpc_success_from_a_device_that_answers,
        rrpc_request_goes_out_at_qos0_with_its_message_id,
        rrpc_offline_and_halfconn,
        rrpc_on_a_custom_topic,
        server_side_publishes_reach_subscribers_and_say_what_became_of_them,
    }
    broker_tls {
        devices_connect_over_tls_1_3_and_1_2,
        a_plain_client_on_a_tls_listener_gets_no_mqtt,
    }
}
