import { Field, Float, ID, Int, ObjectType } from 'type-graphql';
import { HardwareEnum } from '../compute/compute.types';

@ObjectType({ description: 'An amount of money: whole cents of a currency' })
export class Money {
  @Field(() => Int) amountCents: number;
  @Field({ description: 'ISO 4217, lower case (usd)' }) currency: string;
}

@ObjectType()
export class UsageRow {
  @Field({ description: 'Service id, or deployment:<id> for custom models' }) service: string;
  @Field(() => HardwareEnum) hardware: string;
  @Field(() => Float, { description: 'Billable device-seconds' }) seconds: number;
  @Field(() => Float, { description: 'seconds / 60, not rounded' }) minutes: number;
  @Field(() => Money, { description: 'At price-book prices, rounded to the cent' }) cost: Money;
}

@ObjectType()
export class Usage {
  @Field(() => Float) totalSeconds: number;
  @Field(() => Money, { description: 'Rounded per meter as Stripe invoices it, so it can differ from the sum of rounded rows by under a cent per row' })
  total: Money;
  @Field(() => [UsageRow]) rows: UsageRow[];
}

@ObjectType()
export class BillLine {
  @Field() description: string;
  @Field(() => Float, { description: 'Billed device-minutes (device-milliseconds / 60000)' }) minutes: number;
  @Field({ description: 'Price per device-minute in cents, as a decimal string' }) unitAmountCents: string;
  @Field(() => Money) amount: Money;
}

@ObjectType()
export class CurrentBill {
  @Field() periodStart: Date;
  @Field() periodEnd: Date;
  @Field(() => [BillLine], { description: 'One line per meter' }) lines: BillLine[];
  @Field(() => Money) total: Money;
  @Field(() => Money, { nullable: true }) spendLimit: Money | null;
}

@ObjectType()
export class Invoice {
  @Field(() => ID) id: string;
  @Field(() => String, { nullable: true }) number: string | null;
  @Field(() => String, { nullable: true, description: "Stripe's status: draft, open, paid, uncollectible or void" }) status: string | null;
  @Field(() => Money) total: Money;
  @Field() periodStart: Date;
  @Field() periodEnd: Date;
  @Field(() => String, { nullable: true }) hostedInvoiceUrl: string | null;
}

@ObjectType()
export class SetSpendLimitPayload {
  @Field(() => Money) spendLimit: Money;
}
