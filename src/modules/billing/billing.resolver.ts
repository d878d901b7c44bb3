import { Arg, Ctx, ID, Int, Mutation, Query, Resolver } from 'type-graphql';
import type { GqlContext } from '../../platform/graphql/context';
import { CurrentBill, Invoice, SetSpendLimitPayload, Usage } from './billing.types';

/** Bills and spend limits: BILLING scope (roles OWNER, ADMIN, BILLING). */
@Resolver()
export class BillingResolver {
  @Query(() => Usage, { description: 'Usage from the ledger in [from, to), grouped by service and hardware' })
  usage(@Arg('from') from: Date, @Arg('to') to: Date, @Ctx() ctx: GqlContext) {
    return ctx.services.billing.usage(ctx, from, to);
  }

  @Query(() => CurrentBill, { description: 'The open billing period as Stripe will invoice it', complexity: 5 })
  currentBill(@Ctx() ctx: GqlContext) {
    return ctx.services.billing.currentBill(ctx);
  }

  @Query(() => [Invoice], { description: "The tenant's invoices from Stripe, newest first", complexity: 5 })
  invoices(@Ctx() ctx: GqlContext) {
    return ctx.services.billing.invoices(ctx);
  }

  @Query(() => Invoice, { complexity: 5 })
  invoice(@Arg('id', () => ID) id: string, @Ctx() ctx: GqlContext) {
    return ctx.services.billing.invoice(ctx, id);
  }

  @Mutation(() => SetSpendLimitPayload, { description: 'New jobs are refused with SPEND_LIMIT_REACHED once this month would pass it' })
  setSpendLimit(@Arg('amountCents', () => Int) amountCents: number, @Ctx() ctx: GqlContext) {
    return ctx.services.billing.setSpendLimit(ctx, amountCents);
  }
}
