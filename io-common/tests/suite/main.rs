//! The adapter suite: every test is written once, generic over `aliot_io::Runtime`, and run on tokio
//! (`on_tokio::…`) and on smol (`on_smol::…`); then the two runtimes against each other
//! (`cross_runtime::…`).

mod broker_mqtt;
mod broker_rrpc;
mod broker_store;
mod broker_tls;
mod client_connect;
mod client_pubsub;
mod client_reconnect;
mod client_rrpc;
mod client_things;
mod client_tls;
mod cross_runtime;
mod support;
#[cfg(feature = "openssl")]
mod tls_psk;
mod websocket;

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
        a_service_beside_the_broker_stops_with_it_and_is_waited_for,
        over_the_connection_cap_a_device_is_closed_until_one_leaves,
    }
    broker_rrpc {
        rrpc_success_from_a_device_that_answers,
        rrpc_request_goes_out_at_qos0_with_its_message_id,
        rrpc_offline_and_halfconn,
        rrpc_on_a_custom_topic,
        server_side_publishes_reach_subscribers_and_say_what_became_of_them,
    }
    broker_store {
        a_kept_session_and_its_queue_survive_a_restart_on_the_same_directory,
        pubacks_stop_while_the_store_fails_and_resume_when_it_recovers,
        server_side_publishes_are_answered_after_their_commit,
        a_directory_in_use_or_holding_something_else_is_refused,
    }
    broker_tls {
        devices_connect_over_tls_1_3_and_1_2,
        a_plain_client_on_a_tls_listener_gets_no_mqtt,
    }
    client_connect {
        a_device_connects_with_its_signed_credentials,
        a_wrong_secret_is_refused_as_not_authorized,
        an_unknown_device_is_refused,
        ready_credentials_connect_to_a_broker_in_open_mode,
        ready_credentials_without_open_mode_are_refused,
        nothing_listening_is_an_io_error_naming_the_address,
        an_invalid_tls_server_name_is_reported_before_dialling,
        an_invalid_client_id_is_reported_before_dialling,
        dropping_the_client_sends_disconnect,
        disconnect_stops_every_clone,
        a_connect_dropped_before_its_connack_stops_its_driver,
    }
    client_pubsub {
        qos0_and_qos1_messages_reach_another_device,
        successive_qos1_publishes_get_distinct_packet_ids,
        suback_codes_refuse_a_topic_of_another_device,
        after_unsubscribe_nothing_more_arrives,
        the_server_side_reaches_the_device,
        qos2_and_empty_filter_lists_are_rejected_without_sending,
        publishes_dropped_before_their_puback_do_not_disturb_later_ones,
        a_message_receiver_dropped_while_waiting_loses_nothing,
        a_full_message_queue_holds_the_broker_back_without_losing_messages,
        a_subscriber_that_falls_behind_slows_its_publisher_down_and_loses_nothing,
    }
    client_reconnect {
        after_a_broker_restart_the_client_reconnects_and_subscribes_again,
        with_a_kept_session_messages_sent_while_offline_arrive_after_the_reconnect,
        commands_given_while_offline_go_out_after_the_reconnect,
        failed_attempts_back_off_within_the_configured_bounds,
    }
    client_rrpc {
        a_sync_handler_answers_rrpc_calls,
        the_handler_sees_the_request_topic_and_message_id,
        an_async_handler_answers_from_its_own_task,
        a_custom_topic_call_is_answered_on_its_own_topic,
        without_a_handler_the_caller_times_out,
    }
    client_things {
        post_properties_resolves_with_the_platforms_reply,
        post_event_resolves_and_a_bad_identifier_is_refused,
        without_auto_subscription_no_reply_comes_and_the_call_times_out,
        on_property_set_answers_and_the_platform_gets_the_result,
        a_handler_may_set_handlers,
        an_unhandled_property_set_goes_to_messages,
        on_service_answers_async_calls_on_their_reply_topic,
        on_service_answers_sync_calls_over_rrpc,
        without_ext_a_sync_call_comes_in_the_sys_form_and_is_answered_there,
        ntp_sync_gives_the_time_now,
        the_shadow_is_read_updated_and_controlled,
        report_version_and_on_upgrade_follow_an_ota_job,
    }
    client_tls {
        a_device_works_over_tls,
        an_untrusted_certificate_fails_the_handshake,
        a_name_mismatch_fails_the_handshake,
        plain_tcp_to_a_tls_listener_gets_no_connack,
    }
    websocket {
        a_device_works_over_websocket,
        a_device_works_over_websocket_with_tls,
        what_is_not_a_websocket_upgrade_gets_an_http_error,
        a_connection_that_never_upgrades_is_closed_at_the_connect_deadline,
    }
}

/// The OpenSSL listeners' tests, in a build that has them.
#[cfg(feature = "openssl")]
mod openssl_tests {
    on_both_runtimes! {
        tls_psk {
            a_device_works_over_tls_psk,
            an_unknown_device_is_refused_in_the_handshake_and_counted,
            a_wrong_secret_fails_the_handshake,
            tls_psk_needs_a_device_login,
        }
    }
}
